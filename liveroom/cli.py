"""Entry points of every command, and the ``liveroom`` command over them all.

Each ``*_main`` runs one command's ``main(argv) -> int`` (kept beside the code
it drives) and turns a :class:`LiveroomError` into a one-line message on
stderr and exit status 2, so a user never sees a traceback for bad input.
Imports are lazy so that ``--help`` of one command does not load torch.
``liveroom COMMAND ARG...`` runs what ``bin/COMMAND ARG...`` runs.

Where output goes, in every command: the result on stdout (the path written,
the table or listing asked for, the address served, ``--help``,
``--version``); progress, counts on the way, warnings, hints and errors on
stderr. A script can capture stdout and let a person read stderr.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from .cliargs import command_parser
from .errors import LiveroomError

Entry = Callable[[Sequence[str] | None], int]


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """``main(argv)``, with every error a user can act on turned into one line and an exit status."""
    try:
        return main(argv)
    except LiveroomError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bin/score --help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a path that cannot be read or written: say which, no traceback
        print(f"{prog}: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 2


@functools.cache  # once a process
def _exit_without_a_last_collection() -> None:
    """At exit, leave every object to the OS instead of a last garbage collection over them all.

    That collection walks what the imports made (torch's, pandas') only for the memory to be
    freed anyway: about 0.5 s of CPU at the end of bin/serve or bin/train, 0.15 s of bin/score.
    By then a command has closed its files and servers (``with``, clean-up handlers); the other
    ``atexit`` handlers and ``weakref.finalize`` still run, and Python never promised finalizers
    for what is still alive at exit.
    """
    atexit.register(gc.freeze)


def _command(module: str, prog: str) -> Entry:
    """The entry point of command ``prog``: ``module``'s ``main``, imported when it runs."""
    def entry(argv: Sequence[str] | None = None) -> int:
        _exit_without_a_last_collection()
        main = importlib.import_module(module, __package__).main
        return run(main, argv, prog)

    entry.__name__ = prog.replace("-", "_") + "_main"
    return entry


score_main = _command(".scoring.score", "score")
collect_main = _command(".scoring.collect", "collect")
batch_main = _command(".scoring.batch", "batch")
train_main = _command(".train.cli", "train")
predict_main = _command(".train.predict", "predict")
report_main = _command(".report.cli", "report")
serve_main = _command(".serve.cli", "serve")
make_synthetic_main = _command(".synthetic", "make-synthetic")
sim_server_main = _command(".sim.server", "sim-server")
local_llm_main = _command(".local_llm", "local-llm")
demo_main = _command(".demo", "demo")
experiment_main = _command(".experiment.cli", "experiment")

COMMANDS: dict[str, tuple[Entry, str]] = {  # what `liveroom NAME` runs, and its line in `liveroom --help`
    "score": (score_main, "ask the chat model every stage x persona of each pitch (resumable)"),
    "collect": (collect_main, "a run directory's answers as entry/state/action/read features"),
    "batch": (batch_main, "the same questions through a Batch API: prepare, submit, fetch, ..."),
    "train": (train_main, "train the sales model on pitches and features"),
    "predict": (predict_main, "a trained model's forecasts for new pitches, as CSV"),
    "experiment": (experiment_main, "every arm x seed trained together: mean ± std and paired tests"),
    "report": (report_main, "trained models and a run, drawn into one HTML page"),
    "serve": (serve_main, "forecast API and page over a trained model"),
    "make-synthetic": (make_synthetic_main, "synthetic pitches and features with a planted signal"),
    "sim-server": (sim_server_main, "a simulated chat-completions server (heuristic, not an LLM)"),
    "local-llm": (local_llm_main, "a real local LLM server (llama.cpp): install, serve, run, path"),
    "demo": (demo_main, "the whole pipeline end to end on the simulator (what `make demo` runs)"),
}


def liveroom_main(argv: Sequence[str] | None = None) -> int:
    """``liveroom COMMAND ARG...``: the command's own entry point with its arguments."""
    width = max(map(len, COMMANDS))
    p = command_parser(
        "liveroom", usage="liveroom [--help] [--version] COMMAND [ARG...]",
        description="Sales forecasts for live-stream pitches from LLM persona scores. "
                    "`liveroom COMMAND ARG...` runs what `bin/COMMAND ARG...` runs.",
        epilog="commands (`liveroom COMMAND --help` for each one's flags):\n"
               + "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of the commands below")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="the command's arguments")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # argparse would also ask for ARG, which is optional
        p.error("a COMMAND is needed; `liveroom --help` lists them")
    args = p.parse_args(argv)
    return COMMANDS[args.command][0](args.args)
