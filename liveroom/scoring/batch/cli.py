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

from ...async_client.providers import (
    DEFAULT_BASE_URL,
    Provider,
    default_base_url,
    resolve_provider,
)
from ...async_client.transport import endpoint_host
from ...cliargs import (
    api_key,
    resolve_base_url,
)
from ...data.inputs import check_encoding
from ...errors import InputError
from ..cost_flags import price_choice
from ..dry_run import dry_run
from ..plan import ModelParams, Plan, make_plan
from ..prices import Prices, resolve_prices
from ..probs_flags import ask_probabilities, requested_top_logprobs
from ..usage import update_usage
from .flags import build_parser
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
    params, notes = ask_probabilities(
        ModelParams(args.model, args.temperature, args.max_tokens, args.response_format, args.extra_body),
        requested_top_logprobs(args), [provider])
    for note in notes:  # a provider that caps or returns no probabilities: said once, before anything is written
        print(f"batch: note: {note}", file=sys.stderr, flush=True)
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


COMMANDS = {"prepare": cmd_prepare, "submit": cmd_submit, "status": cmd_status, "fetch": cmd_fetch,
            "import": cmd_import, "cancel": cmd_cancel}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = COMMANDS[args.command](args)
    return rc
