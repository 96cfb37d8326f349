"""The async scoring engine: moves (id, request) pairs to (id, record) pairs.

Generic: jobs in, records out. It knows nothing about live rooms; an app
(:mod:`liveroom.scoring.score`) hands it jobs and a task that says what a
reply means, and decides itself which jobs a resumed run still needs.

===============  ==============================================================
``engine``       workers, stop and grace, one record per job
``contract``     what callers share with it: Job, Client, Task, Admission, EngineConfig, Stats
``sending``      one job's sends: the outage wait, the rate limits, the live limit's count
``policy``       the retry policy, the one place a wait is decided: one tenacity-style class a rule
``errors``       what a call can end in: Retryable, Rejected, Fatal, UnusableReply; RunFailed
``record``       the Record type and its one line format (and the done-scan pattern)
``run_dir``      the run directory (RunDir): its one reader and writer; append-only JSONL, resume scan
``manifest``     the typed run manifest and its one JSON form; ``files`` crash-safe whole-file writes
``transport``    the HTTP layer: error mapping, readers, base URL and credentials, redaction
``chat``         the chat-completions client; ``batch_api`` the Batch API client
``limits``       rpm / tpm limits, the server's window, the shared cool-down, outages
``window``       what an answer's x-ratelimit-* headers said (read by transport, used by limits)
``concurrency``  the live concurrency limit (AIMD) and a job's slot under it
``pool``         several endpoints of one model: which one a job goes to, retirement, failover
``providers``    what differs by provider (default base URL, batch profiles)
``progress``     the progress bar or lines; ``runner`` the event loop
===============  ==============================================================

What it promises under faults (no hang, whole records, no secret shown) is
listed in ``docs/RELIABILITY.md`` with the test of each promise.
"""
