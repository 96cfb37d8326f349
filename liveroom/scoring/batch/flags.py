"""``bin/batch``'s arguments: one subcommand a verb, each with the flags it takes.

Which function runs a verb is :mod:`.cli`'s business (``args.command`` names the verb).
"""

from __future__ import annotations

import argparse
from typing import Any

from ...async_client.engine import EngineConfig
from ...async_client.providers import BATCH_PROVIDERS, FILE_STATUS, add_provider_argument
from ...cliargs import command_parser, non_negative_int, number, positive_float, positive_int
from ...data.inputs import ENCODING_HELP
from ..cost_flags import add_cost_arguments
from ..score import add_request_arguments
from .flows import Api, UploadWait


def _add_api(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--run", required=True, metavar="RUN_DIR", help="the run directory of bin/batch prepare")
    sp.add_argument("--base-url", default=None,
                    help="API base URL (default: the run's endpoint; $OPENAI_BASE_URL when it is the same)")
    add_provider_argument(sp, "the one bin/batch prepare used, else detected from the base URL's host")
    sp.add_argument("--timeout", type=positive_float, default=Api.timeout, help="seconds per HTTP call (default: %(default)s)")
    sp.add_argument("--max-retries", type=non_negative_int, default=Api.max_retries,
                    help="retries of a call on 429/5xx/connection errors (default: %(default)s)")
    sp.add_argument("--backoff", type=positive_float, default=Api.backoff,
                    help="first retry wait in seconds, doubling up to 60 (default: %(default)s)")


def _each(name: str) -> str:
    """A batch setting of every provider, for the help: ``openai 50000, zhipu 50000, ...``."""
    return ", ".join(f"{p.name} {getattr(p.batch, name) or 'none'}" for p in BATCH_PROVIDERS.values()
                     if p.batch.api)


def _add_prepare(sub: Any) -> None:
    sp = sub.add_parser("prepare", help="write the request files for what is not done yet",
                        description="Write RUN_DIR/batch/requests-NNNN.jsonl in the OpenAI batch format for "
                                    "every request not yet ok in RUN_DIR (nor on its way in a submitted batch). "
                                    "Unsubmitted files of an earlier prepare are replaced. The run manifest is "
                                    "the one bin/score with the same flags writes.")
    add_request_arguments(sp)
    sp.add_argument("--run", "--out", dest="run", required=True, metavar="RUN_DIR",
                    help="run directory, created or extended (--out: the same)")
    add_provider_argument(sp, "the one an earlier prepare of RUN_DIR used, else detected from the base URL's "
                              "host; generic for any other")
    sp.add_argument("--endpoint", default=None,
                    help="the 'url' of each request line and the batch endpoint (default: the provider's: "
                         + _each("endpoint") + ")")
    sp.add_argument("--max-requests", type=positive_int, default=None,
                    help="requests per file (default: the provider's: " + _each("max_requests") + ")")
    sp.add_argument("--max-bytes", type=number(int, 1024, name="bytes"), default=None,
                    help="bytes per file (default: the provider's: " + _each("max_bytes") + ")")
    sp.add_argument("--max-line-bytes", type=number(int, 1024, name="bytes"), default=None,
                    help="bytes per request line, a longer one is refused (default: the provider's: "
                         + _each("max_line_bytes") + ")")
    sp.add_argument("--shards", type=positive_int, default=None, metavar="N",
                    help="N request files of equal size (one line more or less), one per machine; with "
                         "--provider vllm each one's vllm run-batch command is printed")
    sp.add_argument("--max-reasks", type=non_negative_int, default=EngineConfig.max_reasks,
                    help="re-asks of a request whose replies were unusable, counted over every import; "
                         "after them prepare leaves it out (default: %(default)s, as bin/score)")
    sp.add_argument("--include-submitted", action="store_true",
                    help="also prepare requests of submitted batches not fetched yet (they may be paid twice)")
    sp.add_argument("--encoding", default=None, help=ENCODING_HELP)
    add_cost_arguments(sp, batch=True)


def _add_submit(sub: Any) -> None:
    sp = sub.add_parser("submit", help="upload each prepared file and create its batch (idempotent)",
                        description="Upload (purpose=batch) every prepared file without a batch, wait until the "
                                    "upload is usable (where the provider has a file-status call), and create its "
                                    "batch. Ids are kept in RUN_DIR/batch/state.json: running it again never makes "
                                    "a second batch for a file, and a file uploaded without a batch gets its batch "
                                    "without a new upload.")
    _add_api(sp)
    sp.add_argument("--completion-window", default=None, metavar="WINDOW",
                    help="the batch's completion window, e.g. 72h for dashscope (default: the provider's: "
                         + _each("completion_window") + "; none: not sent)")
    sp.add_argument("--keep-input-file", action="store_true",
                    help="zhipu: send auto_delete_input_file=false (its default deletes the input file)")
    sp.add_argument("--file-status", choices=FILE_STATUS, default=None,
                    help="how to tell an upload is usable: poll GET /files/{id} (404: not yet), optional "
                         "(404: no such call, trust the upload), absent (never ask) (default: the provider's: "
                         + _each("file_status") + ")")
    sp.add_argument("--file-timeout", type=positive_float, default=UploadWait.timeout,
                    help="seconds to wait for an upload to become usable (default: %(default)s)")
    sp.add_argument("--file-poll", type=positive_float, default=UploadWait.poll,
                    help="seconds between checks of an upload (default: %(default)s)")


def _add_watching(sub: Any) -> None:
    """status, fetch and cancel."""
    sp = sub.add_parser("status", help="one line per file: batch id, status, completed/failed/total")
    _add_api(sp)
    sp.add_argument("--offline", action="store_true", help="print the recorded state without asking the server")

    sp = sub.add_parser("fetch", help="poll the batches; download and import those that ended",
                        description="Poll every submitted batch (validating, in_progress, finalizing, then "
                                    "completed, failed, expired or cancelled); for each that ended, download its "
                                    "output and error files into RUN_DIR/batch/ and import them. A batch that ended "
                                    "early contributes what it did; the next prepare asks for the rest.")
    _add_api(sp)
    sp.add_argument("--wait", action="store_true", help="keep polling until every batch has ended")
    sp.add_argument("--interval", type=positive_float, default=30.0, help="seconds between polls (default: %(default)s)")
    _add_accept_model(sp)


def _add_accept_model(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--accept-model", action="append", default=[], metavar="NAME",
                    help="also import replies that model NAME (or a dated version of it) gave; by default only "
                         "the run's model is (repeatable)")


def _add_import_and_cancel(sub: Any) -> None:
    sp = sub.add_parser("import", help="import output/error files obtained by hand",
                        description="Import provider output or error files (lines in any order, matched by "
                                    "custom_id) into RUN_DIR. Replies are checked with the same parser as direct "
                                    "mode; requests already ok are skipped; duplicate lines and unknown ids are "
                                    "reported, never imported twice.")
    sp.add_argument("--run", required=True, metavar="RUN_DIR", help="the run directory of bin/batch prepare")
    sp.add_argument("files", nargs="+", metavar="FILE", help="provider output or error files (JSONL)")
    _add_accept_model(sp)
    sp.add_argument("--id-scheme", choices=("run", "reference"), default="run",
                    help="the files' custom_ids: this run's own (default), or the reference's "
                         "s{stage}_v{version}_i{row}_c{persona}, one file per stage (needs --pitches)")
    sp.add_argument("--pitches", metavar="CSV",
                    help="with --id-scheme reference: the run's pitches file, whose 0-based rows the ids number")
    sp.add_argument("--goods", metavar="JSON",
                    help="with --id-scheme reference: the run's showcase file (the item count of buy replies)")
    sp.add_argument("--encoding", default=None, help="with --id-scheme reference: " + ENCODING_HELP)

    sp = sub.add_parser("cancel", help="cancel the batches still running")
    _add_api(sp)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "batch",
        description="Score pitches through an OpenAI-compatible Batch API (e.g. GLM-4, Qwen, OpenAI), "
                    "into the same run directory as bin/score: prepare request files, submit them, "
                    "fetch and import the results; finish stragglers with bin/batch again or bin/score.",
        epilog="The API key is read from $OPENAI_API_KEY only and is never written anywhere. "
               "Exit status: 0 done, 1 some requests failed or some lines were not usable "
               "(prepare again or run bin/score to retry them), 2 bad input or fatal API error, "
               "3 (fetch without --wait) batches still running.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(sub)
    _add_submit(sub)
    _add_watching(sub)
    _add_import_and_cancel(sub)
    return p


