"""The async scoring engine: moves (id, request) pairs to (id, record) pairs.

Generic: jobs in, records out. It knows nothing about live rooms; an app
(:mod:`liveroom.scoring.score`) hands it jobs and a task that says what a
reply means, and decides itself which jobs a resumed run still needs.

=============  ==============================================================
``engine``     workers, the job/task contract, stats
``errors``     what a call can end in: Retryable, Rejected, Fatal, UnusableReply
``record``     the Record type and its one line format (and the done-scan pattern)
``checkpoint`` the run directory: manifest, append-only JSONL, resume scan
``transport``  the HTTP layer: error mapping, completion and error-body readers
``chat``       the chat-completions client; ``batch_api`` the Batch API client
``limits``     rpm / tpm limits and the shared cool-down; ``policy`` retries
``providers``  what differs by provider (the default base URL)
``progress``   the progress bar or lines; ``runner`` the event loop
``http``       old import path of the chat client and errors, re-exported
=============  ==============================================================
"""
