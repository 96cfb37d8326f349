"""``bin/score``: ask every (stage, pitch, persona) question, resumably.

Wires the stages (:mod:`liveroom.prompts.stages`) to the generic engine: validates
all input (and that a remote endpoint has a key) before anything is sent,
takes the run directory's one-writer lock, checks or writes the run manifest,
skips what the run directory already holds (a run with nothing left writes
nothing; what a content filter refused counts as held unless
``--retry-filtered``), and runs the engine with progress, limits, retries and
clean shutdown on SIGINT/SIGTERM. ``--provider`` (else the base URL's host)
says whose error codes are read first and gives the default base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..async_client.engine import Engine, Stats
from ..async_client.progress import Progress, endpoints_note, status_line
from ..async_client.record import Record
from ..async_client.run_dir import RunDir
from ..async_client.runner import run_loop
from ..async_client.transport import target
from ..cliargs import command_parser, non_negative_float, positive_float
from ..errors import InputError
from ..locks import run_dir_lock
from ..prompts.stages import PROMPT_SETS, STAGES
from ..prompts.wording import DEFAULT_PROMPTS
from .budget import BUDGET_REACHED, Meter, WorstCase, money
from .cost_flags import add_cost_arguments, price_choice
from .dry_run import dry_run
from .endpoints import open_endpoint, own_prices
from .engine_flags import ChatSettings, add_engine_arguments, add_model_arguments, chat_settings
from .plan import Plan, StageTask, make_plan, plan_jobs, scan_done
from .prices import highest, resolve_prices
from .probs_flags import add_probability_arguments, ask_probabilities, requested_top_logprobs


async def execute(plan: Plan, run_dir: Path, chat: ChatSettings, progress_every: float = 10.0,
                  bar: bool | None = None, meter: Meter | None = None) -> tuple[Stats, str | None]:
    """Run what ``plan`` still lacks in ``run_dir`` as ``chat`` says; the counts and why it stopped
    early (if it did).

    The run directory is scanned before anything is written: with nothing left to
    do, nothing is (the run may sit on read-only media). ``meter`` keeps
    ``usage.json``, shows the money spent and, with a budget, admits each job.
    """
    rdir = RunDir(run_dir)
    jobs, todo = plan_jobs(plan, scan_done(plan, rdir))
    if todo == 0:
        return Stats(), None
    if meter is not None:
        meter.open()
    rdir.open(plan.manifest)
    try:
        async with contextlib.AsyncExitStack() as clients:
            pool = [await open_endpoint(clients, spec, chat.timeout, chat.engine) for spec in chat.pool]
            engine = Engine(pool[0].client, pool[0].limits, rdir, StageTask(), chat.engine, endpoints=pool)
            progress = Progress(lambda: engine.stats, every=progress_every, bar=bar,
                                extra=meter.text if meter is not None else None)

            def on_record(record: Record) -> None:
                if meter is not None:
                    meter.counted(record)  # first: the progress line shows the money with this record
                progress.update(record)

            engine.on_record = on_record
            engine.admission = meter if meter is not None and meter.budget is not None else None
            engine.on_warning = lambda text: progress.write(f"score: warning: {text}")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, engine.stop, sig.name)
            progress.start(todo)
            ticker = asyncio.create_task(_tick(progress))
            try:
                stats = await engine.run(jobs, todo)
            finally:
                ticker.cancel()
                progress.close()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the run is the one to show
            rdir.close()
        with contextlib.suppress(Exception):
            if meter is not None:
                meter.save()
        raise
    rdir.close()
    if meter is not None:
        meter.save()
    return stats, engine.stopped


async def _tick(progress: Progress, every: float = 1.0) -> None:
    """Progress keeps coming while no record does (an endpoint that is down)."""
    while True:
        await asyncio.sleep(every)
        progress.refresh()


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that decide what is asked (inputs, stages, personas, model
    parameters): the same for bin/score and bin/batch prepare, so both write
    the same run manifest."""
    p.add_argument("--pitches", required=True, metavar="CSV", help="pitches in the reference format")
    p.add_argument("--goods", metavar="JSON", help="showcase: start -> [[idx, name, price], ...] (needed for stage buy)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages (default: %(default)s)")
    p.add_argument("--prompts", choices=list(PROMPT_SETS), default=None,
                   help=f"prompt set: the wording the model is shown (default: the set RUN_DIR was made with, "
                        f"{DEFAULT_PROMPTS} for a new run; docs/PROTOCOL.md)")
    p.add_argument("--personas", metavar="JSON", help="persona set to use instead of the eight defaults")
    add_model_arguments(p)
    add_probability_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    """The flags of bin/score; numbers are checked as they are parsed."""
    p = command_parser(
        "score",
        description="Score pitches with an OpenAI-compatible chat model: every stage x persona x pitch, "
                    "resumable. Killed at any moment, the same command resumes where it stopped.",
        epilog="The API key is read from $OPENAI_API_KEY only (or user:pass@ in the base URL) and is never "
               "written or shown; a remote endpoint without one is refused before anything is sent. "
               "One bin/score or bin/batch at a time per RUN_DIR. "
               "Exit status: 0 all done, 1 some requests failed (rerun to retry them), "
               "2 bad input, fatal API error, unreachable endpoint or a failed write (disk full), "
               "130/143 interrupted or the endpoint stayed unreachable (rerun to resume).",
    )
    add_request_arguments(p)
    p.add_argument("--run", "--out", dest="run", required=True, metavar="RUN_DIR",
                   help="run directory: manifest and answers, created or resumed (--out: the same)")
    add_engine_arguments(p)
    p.add_argument("--retry-filtered", action="store_true",
                   help="ask again what the provider's content filter refused (else a rerun leaves it)")
    p.add_argument("--grace", type=non_negative_float, default=5.0,
                   help="seconds in-flight requests may finish after SIGINT/SIGTERM; a second signal stops at once (default: %(default)s)")
    p.add_argument("--progress-every", type=positive_float, default=10.0,
                   help="seconds between progress lines when stderr is not a terminal (default: %(default)s)")
    p.add_argument("--give-up-after", type=positive_float, default=600.0, metavar="SECONDS",
                   help="seconds an endpoint that answered may stay unreachable before the run stops, to be "
                        "resumed; meanwhile every worker waits and no request is failed (default: %(default)s)")
    p.add_argument("--encoding", default=None,
                   help="text encoding of the pitches CSV, e.g. gb18030 (default: UTF-8, with or without BOM)")
    add_cost_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """bin/score; the exit status is the epilog's."""
    args = build_parser().parse_args(argv)
    chat = chat_settings(args, args.model, grace=args.grace, give_up_after=args.give_up_after)
    where = target(chat.base_url, chat.api_key)  # a URL that cannot be used: one line
    params, notes = ask_probabilities(chat.params, requested_top_logprobs(args), [s.provider for s in chat.pool])
    chat = replace(chat, params=params)
    for note in notes:  # a provider that caps or returns no probabilities: said once, at the start
        print(f"score: note: {note}", file=sys.stderr, flush=True)
    plan = make_plan(args.pitches, args.goods, args.stages, args.personas, chat.params, chat.manifest_url,
                     args.prompts, args.run, encoding=args.encoding)
    plan.retry_filtered = args.retry_filtered
    prices = resolve_prices(price_choice(args), plan.params.model)
    own = own_prices(chat.pool, prices, args.currency)  # endpoints that name their own prices
    if args.budget is not None and prices is None and len(own) < len(chat.pool):
        raise InputError("--budget needs the prices: give --price-input and --price-output (per million tokens) "
                         "or --price-file, or price_input and price_output for every endpoint of --endpoints")
    # a job may go to any endpoint: its worst case at the highest of the prices it may be charged
    charged = list(own.values()) + ([prices] if prices is not None and len(own) < len(chat.pool) else [])
    if args.dry_run:  # every input checked above, as for a run: print what it would send and cost, write nothing
        bound = prices  # with endpoints' own prices: the highest a job may be charged, an upper bound
        if own:
            bound = replace(highest(charged), source="the highest of the endpoints' prices: the most it can "
                            "cost") if prices is not None or len(own) == len(chat.pool) else None
        return dry_run(Path(args.run), plan, bound)
    where.require_key()  # nothing goes to a remote endpoint without a key
    for spec in chat.endpoints:
        spec.require_key()
    run_dir = Path(args.run)
    with run_dir_lock(run_dir, "bin/score"):  # refused at once while another writer holds RUN_DIR
        plan.manifest = RunDir(run_dir).check(plan.manifest)
        worst = WorstCase(highest(charged), args.max_reasks, args.reask_max_tokens) if charged else None
        meter = Meter(run_dir, plan.manifest.groups, prices, args.budget, worst, own)
        stats, stopped = run_loop(execute(plan, run_dir, chat, args.progress_every, meter=meter))
    if stats.total == 0:
        print(f"score: every request is already done in {run_dir}; nothing sent")
        return 0
    spent = f"; {meter.text()}" if meter.text() else ""
    print(f"score: {status_line(stats).split(' ETA')[0]}{spent}{endpoints_note(stats)}; checkpoint {run_dir}",
          flush=True)  # the result
    if stopped == BUDGET_REACHED and meter.totals.currency is not None:  # a stop like an interrupt's
        print(f"score: budget reached: spent {money(meter.spent or 0.0)} of {money(args.budget)} "
              f"{meter.totals.currency}; raise --budget to go on ({stats.total - stats.done} request(s) "
              "left)", file=sys.stderr)
        return 130
    if stopped:
        print(f"score: {stopped.lower() if stopped.startswith('SIG') else stopped}: "
              f"{stats.total - stats.done} request(s) left; run the same command again to resume",
              file=sys.stderr)
        return 143 if stopped == "SIGTERM" else 130
    if stats.failed:
        filtered = (f"; {stats.filtered} of them refused by the provider's content filter (reason content_filter), "
                    "which a rerun leaves unless --retry-filtered") if stats.filtered else ""
        print(f"score: {stats.failed} request(s) failed (reasons in {run_dir}/*.jsonl); "
              f"run the same command again to retry them{filtered}", file=sys.stderr)
        return 1
    return 0
