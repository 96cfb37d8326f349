"""Entry points of every command.

Each ``*_main`` runs one command's ``main(argv) -> int`` (kept beside the code
it drives) and turns a :class:`LiveroomError` into a one-line message on
stderr and exit status 2, so a user never sees a traceback for bad input.
Imports are lazy so that ``--help`` of one command does not load torch.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

from .errors import LiveroomError


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


def _command(module: str, prog: str) -> Callable[[Sequence[str] | None], int]:
    def entry(argv: Sequence[str] | None = None) -> int:
        main = importlib.import_module(module, __package__).main
        return run(main, argv, prog)

    entry.__name__ = prog.replace("-", "_") + "_main"
    return entry


score_main = _command(".scoring.score", "score")
collect_main = _command(".scoring.collect", "collect")
batch_main = _command(".scoring.batch", "batch")
train_main = _command(".train.cli", "train")
predict_main = _command(".train.predict", "predict")
make_synthetic_main = _command(".synthetic", "make-synthetic")
sim_server_main = _command(".sim.server", "sim-server")
demo_main = _command(".demo", "demo")
local_llm_main = _command(".local_llm", "local-llm")
report_main = _command(".report.cli", "report")
serve_main = _command(".serve.cli", "serve")
experiment_main = _command(".experiment.cli", "experiment")
