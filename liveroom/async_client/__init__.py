"""The async scoring engine: moves (id, request) pairs to (id, record) pairs.

Generic: jobs in, records out. It knows nothing about live rooms; an app
(:mod:`liveroom.scoring.score`) hands it jobs and a task that says what a
reply means, and decides itself which jobs a resumed run still needs.

=============  ==============================================================
``engine``     workers, the job/task contract, stats
``errors``     what a call can end in: Retryable, Rejected, Fatal, UnusableReply; RunFailed
``record``     the Record type and its one line format (and the done-scan pattern)
``run_dir``    the run directory (RunDir): its one reader and writer; append-only JSONL, resume scan
``manifest``   the typed run manifest and its one JSON form; ``files`` crash-safe whole-file writes
``transport``  the HTTP layer: error mapping, readers, base URL and credentials, redaction
``chat``       the chat-completions client; ``batch_api`` the Batch API client
``limits``     rpm / tpm limits, the shared cool-down, outages; ``policy`` retries
``providers``  what differs by provider (default base URL, batch profiles)
``progress``   the progress bar or lines; ``runner`` the event loop
=============  ==============================================================

What it promises under faults (no hang, whole records, no secret shown) is
listed in ``docs/RELIABILITY.md`` with the test of each promise.
"""
