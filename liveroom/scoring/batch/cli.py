"""``bin/batch``: the command line over the flows, and the words it prints.

Progress goes to stderr as it happens; the results on stdout: ``status``
lines and what ``prepare`` wrote. Exit
status: 0 done, 1 some requests failed or some lines were not usable, 2 bad
input or a fatal API error (raised, worded by :mod:`liveroom.cli`), 3 fetch
without ``--wait`` while batches are still running.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from ...async_client.engine import EngineConfig
from ...async_client.providers import (
    BATCH_PROVIDERS,
    DEFAULT_BASE_URL,
    FILE_STATUS,
    Provider,
    add_provider_argument,
    default_base_url,
    resolve_provider,
)
from ...async_client.transport import endpoint_host
from ...cliargs import (
    api_key,
    command_parser,
    non_negative_int,
    number,
    positive_float,
    positive_int,
    resolve_base_url,
)
from ...data.inputs import ENCODING_HELP, check_encoding
from ...errors import InputError
from ..cost_flags import add_cost_arguments, price_choice
from ..dry_run import dry_run
from ..plan import ModelParams, Plan, make_plan
from ..prices import Prices, resolve_prices
from ..score import add_request_arguments
from ..usage import update_usage
from .flows import (
    Api,
    Creation,
    Event,
    PreparedRun,
    UploadWait,
    cancel,
    fetch,
    import_by_hand,
    open_run,
    status,
    submit,
)
from .prepare import DEFAULT_ENDPOINT, PrepareResult, Preview, ShardLimits, prepare
from .reference import reference_hint, reference_scheme
from .runner import import_command, run_commands
from .state import load_state, locked, read_manifest

_SAID = {
    "uploaded": "{name}: uploaded as {file_id}",
    "resumed": "{name}: resuming with uploaded file {file_id}",
    "stale": "{name}: {detail} of its requests are done meanwhile; not submitted; run bin/batch prepare again",
    "upload_failed": "{name}: {detail}; it will be uploaded again by the next submit",
    "created": "{name}: batch {batch_id} {status}",
    "changed": "{line}",
    "imported": "{name}: {status}, imported {detail}",
    "not_submitted": "not submitted yet: {detail} (run bin/batch submit)",
}


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _say(e: Event) -> None:
    """A flow's step, as one line on stderr."""
    s = e.shard
    shown: dict[str, Any] = {"detail": e.detail}
    if s is not None:
        shown.update(name=s.name, file_id=s.file_id, batch_id=s.batch_id, status=s.status, line=s.line())
    _err("batch: " + _SAID[e.kind].format(**shown))


def _count_usage(run_dir: Path, groups: Any = None, prices: Prices | None = None) -> None:
    """``usage.json`` brought up to date with the records imported (priced at the batch discount: they have
    no latency) and with ``prices`` when given (prepare's, so that fetch and import can price what comes)."""
    with locked(run_dir):
        update_usage(run_dir, read_manifest(run_dir).groups if groups is None else groups, prices)


def _api(args: argparse.Namespace, run: PreparedRun) -> Api:
    return Api(run.base_url, api_key(), args.timeout, args.max_retries, args.backoff)


# ----------------------------------------------------------------- commands

def _prepare_inputs(args: argparse.Namespace) -> tuple[Plan, ShardLimits, Provider]:
    """The plan, file limits and provider of ``prepare``, every flag checked before anything is written.

    The provider is ``--provider``, else the one an earlier prepare of the run recorded, else the one
    the base URL's host names.
    """
    check_encoding(args.encoding)  # a name Python does not know: one line, before anything is read
    name = args.provider or load_state(Path(args.run)).provider
    base_url = resolve_base_url(args.base_url, default_base_url(name))
    u = urlsplit(base_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"--base-url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {endpoint_host(base_url)!r}")
    provider = resolve_provider(name, base_url)
    b = provider.batch
    endpoint = args.endpoint or b.endpoint
    if not endpoint.startswith("/"):
        raise InputError(f"--endpoint must be a path such as {DEFAULT_ENDPOINT}, got {endpoint!r}")
    params = ModelParams(args.model, args.temperature, args.max_tokens, args.response_format, args.extra_body)
    plan = make_plan(args.pitches, args.goods, args.stages, args.personas, params, base_url, args.prompts,
                     args.run, encoding=args.encoding)
    return plan, ShardLimits(endpoint, args.max_requests or b.max_requests, args.max_bytes or b.max_bytes,
                             args.max_line_bytes or b.max_line_bytes, args.shards), provider


def _prepared_line(r: PrepareResult, max_reasks: int) -> str:
    w = r.written
    where = f"{r.dir}/{w[0].name}" + (f" .. {w[-1].name}" if len(w) > 1 else "") if w else ""
    return (f"batch: prepared {r.requests} request(s) in {len(w)} file(s)" + (f": {where}" if where else "")
            + (f"; {r.reasks} of them re-ask(s) after an unusable reply" if r.reasks else "")
            + (f"; {r.replaced} earlier unsubmitted file(s) replaced" if r.replaced else "")
            + (f"; {r.pending} request(s) left out: in submitted batches not fetched yet" if r.pending else "")
            + (f"; {r.exhausted} request(s) left out: still unusable after --max-reasks {max_reasks} re-asks "
               "(bin/score asks them afresh)" if r.exhausted else ""))


def cmd_prepare(args: argparse.Namespace) -> int:
    plan, limits, provider = _prepare_inputs(args)
    if args.dry_run:  # every input checked: print what prepare would write and its cost, write nothing
        return dry_run(Path(args.run), plan, resolve_prices(price_choice(args), plan.params.model),
                       Preview(Path(args.run), plan, limits, args.include_submitted, args.max_reasks))
    run_dir = Path(args.run)
    prices = resolve_prices(price_choice(args), plan.params.model)
    r = prepare(run_dir, plan, limits, args.include_submitted, args.max_reasks, provider.name,
                number_on=not provider.batch.api)
    if prices is not None and r.requests:
        _count_usage(run_dir, plan.manifest.groups, prices)
    line = _prepared_line(r, args.max_reasks)
    if r.requests == 0:
        _err(line)
    elif provider.batch.api:
        print(line, flush=True)  # the result: the files written
    else:  # no API to submit to: the result is the command each machine runs
        _err(line)
        print("\n".join(run_commands(run_dir, r.written, plan.params.model)), flush=True)
        _err(f"batch: run each command on one machine, bring the output files back, then: "
             f"{import_command(run_dir, r.written)}")
    if r.requests == 0:
        _err(f"batch: nothing to prepare: every request is done in {run_dir} or on its way")
    return 0


def _creation(args: argparse.Namespace, run: PreparedRun) -> Creation:
    """What the batches are created with: the completion window checked against the provider."""
    b, name = run.provider.batch, run.provider.name
    window = b.check_window(args.completion_window, name)
    if args.keep_input_file and not b.auto_delete_input_file:
        raise InputError(f"--keep-input-file: {name} documents no auto_delete_input_file (only zhipu does)")
    return Creation(window, False if args.keep_input_file else None)


def cmd_submit(args: argparse.Namespace) -> int:
    run = open_run(Path(args.run), args.base_url, args.provider)
    creation = _creation(args, run)
    r = submit(run, _api(args, run), UploadWait(args.file_timeout, args.file_poll, args.file_status), _say, creation)
    if not r.todo:
        _err("batch: nothing to submit: every prepared file has its batch")
    return 1 if r.refused else 0


def cmd_status(args: argparse.Namespace) -> int:
    run = open_run(Path(args.run), args.base_url, args.provider)
    for s in status(run, _api(args, run), args.offline):
        print(s.line())
        for line in s.error_lines():
            print(line)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    run = open_run(Path(args.run), args.base_url, args.provider)
    r = fetch(run, _api(args, run), args.wait, args.interval, _say, args.accept_model)
    if not r.watched:
        _err("batch: no batch to fetch")
        return 0
    _count_usage(run.dir)
    if r.report.seen or r.report.files_skipped or r.report.wrong_model:
        for line in r.report.lines():
            _err(line)
    if r.other_model:
        _err(_accept_hint(run.dir, r.other_model))
    if r.left:
        _err(f"batch: {r.left} batch(es) still running; run bin/batch fetch again (or with --wait)")
        return 3
    if r.report.failed + r.ended_early:
        _err("batch: some requests are not ok; bin/batch prepare (then submit) or bin/score asks them again")
        return 1
    return 0


def _accept_hint(run_dir: Path, files: Sequence[Path]) -> str:
    """The import that takes the lines of another model a fetch left out: their batches are finished,
    so a fetch (with ``--accept-model`` or not) never reads those files again."""
    command = shlex.join(["bin/batch", "import", "--run", str(run_dir), "--accept-model", "NAME",
                          *map(str, files)])
    return (f"batch: the lines of another model are in finished batches, which fetch does not read again; "
            f"to import them, with NAME the model named under 'other model' above: {command}")


def cmd_cancel(args: argparse.Namespace) -> int:
    run = open_run(Path(args.run), args.base_url, args.provider)
    live = cancel(run, _api(args, run))
    for s in live:
        _err(f"batch: {s.line()}")
    if not live:
        _err("batch: no running batch to cancel")
    else:
        _err("batch: run bin/batch fetch --wait to import what was done")
    return 0


REFERENCE_ONLY = ("pitches", "goods", "encoding")  # import's flags that only the reference's ids use


def cmd_import(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files]
    given = sorted(f"--{name}" for name in REFERENCE_ONLY if getattr(args, name) is not None)
    if given and args.id_scheme != "reference":  # ignored otherwise: a user who gave them meant that scheme
        raise InputError(f"{', '.join(given)}: only with --id-scheme reference")
    check_encoding(args.encoding)
    scheme = reference_scheme(args.pitches, args.goods, args.encoding) if args.id_scheme == "reference" else None
    r = import_by_hand(Path(args.run), files, api_key(), args.accept_model, scheme)
    _count_usage(Path(args.run))
    for line in r.report.lines():
        _err(line)
    if args.id_scheme == "run" and (hint := reference_hint(r.report)):
        _err(f"batch: {hint}")
    if r.finished:
        _err(f"batch: every request of {', '.join(r.finished)} is now accounted for; marked finished")
    return 1 if r.report.failed or r.report.unknown or r.report.malformed else 0


# ----------------------------------------------------------------- command line

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
    sp.set_defaults(func=cmd_prepare)


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
    sp.set_defaults(func=cmd_submit)


def _add_watching(sub: Any) -> None:
    """status, fetch and cancel."""
    sp = sub.add_parser("status", help="one line per file: batch id, status, completed/failed/total")
    _add_api(sp)
    sp.add_argument("--offline", action="store_true", help="print the recorded state without asking the server")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("fetch", help="poll the batches; download and import those that ended",
                        description="Poll every submitted batch (validating, in_progress, finalizing, then "
                                    "completed, failed, expired or cancelled); for each that ended, download its "
                                    "output and error files into RUN_DIR/batch/ and import them. A batch that ended "
                                    "early contributes what it did; the next prepare asks for the rest.")
    _add_api(sp)
    sp.add_argument("--wait", action="store_true", help="keep polling until every batch has ended")
    sp.add_argument("--interval", type=positive_float, default=30.0, help="seconds between polls (default: %(default)s)")
    _add_accept_model(sp)
    sp.set_defaults(func=cmd_fetch)


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
    sp.set_defaults(func=cmd_import)

    sp = sub.add_parser("cancel", help="cancel the batches still running")
    _add_api(sp)
    sp.set_defaults(func=cmd_cancel)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc
