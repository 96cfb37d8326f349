"""Request files run by the user on machines of their own: ``vllm run-batch``.

vLLM has no Batch API to upload to; its offline runner reads a file of the
same request lines and writes one output line per input line. The formats,
from vLLM's source (``vllm/entrypoints/openai/run_batch.py``, models
``BatchRequestInput``, ``BatchResponseData``, ``BatchRequestOutput``; the
error body ``ErrorResponse``/``ErrorInfo`` of
``vllm/entrypoints/openai/protocol.py``; docs/PROVIDERS.md section 4.1):

* input ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
  "body"}``, the body a chat completion request (extra fields are kept);
* output, in input order: ``{"id": "vllm-…", "custom_id", "response":
  {"status_code", "request_id": "vllm-batch-…", "body"}, "error"}``; a failed
  request has ``body: null`` and ``error`` set (an ``ErrorResponse``
  ``{"error": {"message", "type", "param", "code"}}``, its HTTP status as
  ``status_code``; or the text of an exception, with status 400).

The runner's flags: ``-i/--input-file``, ``-o/--output-file`` and the engine's
``--model`` (its ``--served-model-name`` is the name the answers carry).
Nothing here runs anything: it says what the user runs, and the output files
come back through ``bin/batch import`` as any provider's do.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from .state import Shard, batch_dir

RUNNER = "vllm run-batch"


def output_name(shard: Shard) -> str:
    """``requests-NNNN.output.jsonl``: the name fetch gives a provider's output file too."""
    return shard.name.removesuffix(".jsonl") + ".output.jsonl"


def run_commands(run_dir: Path, shards: Sequence[Shard], model: str | None) -> list[str]:
    """One ``vllm run-batch`` command per request file, each for one machine."""
    d = batch_dir(run_dir)
    model_flag = ["--model", model] if model else []
    return [shlex.join([*RUNNER.split(), "-i", str(d / s.name), "-o", str(d / output_name(s)), *model_flag])
            for s in shards]


def import_command(run_dir: Path, shards: Sequence[Shard]) -> str:
    """The import of the output files the commands write."""
    d = batch_dir(run_dir)
    return shlex.join(["bin/batch", "import", "--run", str(run_dir), *(str(d / output_name(s)) for s in shards)])


def no_api(provider: str, run_dir: Path) -> str:
    """Why submit, fetch and cancel do nothing for a provider without a Batch API, and what to do instead."""
    return (f"{provider} has no Batch API: run the {RUNNER} command bin/batch prepare printed for each file, "
            f"then bin/batch import --run {shlex.quote(str(run_dir))} with the output files")
