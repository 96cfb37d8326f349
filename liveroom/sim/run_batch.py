"""``bin/sim-server run-batch -i IN -o OUT``: the simulator as vLLM's offline batch runner.

It reads a file of batch request lines and writes what ``vllm run-batch``
writes for it (vllm/entrypoints/openai/run_batch.py: ``BatchRequestInput`` in,
``BatchRequestOutput`` out, docs/PROVIDERS.md section 4.1), each chat
request answered as the chat server answers it
(:func:`~liveroom.sim.completion.complete`):

* one output line per input line, in input order: ``{"id": "vllm-<hex>",
  "custom_id", "response": {"status_code": 200, "request_id":
  "vllm-batch-<hex>", "body": <chat.completion>}, "error": null}``;
* a failed request keeps the ``response`` with its status and ``body: null``
  and sets ``error``: an ``ErrorResponse`` (``{"error": {"message", "type",
  "param", "code"}}``, ``code`` the HTTP status) where the server answered one,
  the text of an exception otherwise (status 400);
* a line that is not a request (not JSON, no ``custom_id``, a body that is not
  an object with ``messages``) stops the run, as vLLM's validation does: one
  line naming it, exit 2, no output written.

``--p-error``, ``--p-exception`` and ``--p-nonjson`` make so many lines an
error response, an exception or a reply without JSON (first asks only), drawn
from ``--seed``, the ``custom_id`` and the conversation, so a run is
reproducible. ``--model`` is the name the answers carry, as vLLM's first
``--served-model-name`` (default: the model each request names).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import orjson

from ..cliargs import command_parser, non_negative_int, probability
from ..errors import InputError
from .completion import complete, completion_body, conversation_digest, logprobs_asked, model_of
from .config import SimConfig
from .prompt import PromptError, read_prompt

CHAT_URL = "/v1/chat/completions"  # the one url vLLM's runner sends to its chat server


@dataclass(frozen=True)
class RunBatchConfig:
    model: str | None = None  # the name every answer carries; None: the request's own
    seed: int = 0
    p_error: float = 0.0      # an ErrorResponse line (HTTP 400)
    p_exception: float = 0.0  # a line whose error is an exception's text
    p_nonjson: float = 0.0    # a 200 whose reply holds no JSON (first asks only)

    def validate(self) -> None:
        ps = {"--p-error": self.p_error, "--p-exception": self.p_exception, "--p-nonjson": self.p_nonjson}
        for name, p in ps.items():
            if not 0.0 <= p <= 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {p}")
        if sum(ps.values()) > 1.0:
            raise InputError("--p-error, --p-exception and --p-nonjson must sum to at most 1")


def _vllm_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _draw(seed: int, custom_id: str, digest: bytes) -> float:
    h = hashlib.blake2b(f"{seed}\0{custom_id}\0".encode() + digest, digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def _error_line(custom_id: str, status: int, error: Any) -> dict[str, Any]:
    return {"id": _vllm_id("vllm"), "custom_id": custom_id,
            "response": {"status_code": status, "request_id": _vllm_id("vllm-batch"), "body": None},
            "error": error}


def _error_response(message: str, type_: str, status: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def request_of(raw: bytes, where: str) -> dict[str, Any]:
    """A request line checked as vLLM's runner checks it; :class:`InputError` naming ``where`` else."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InputError(f"{where}: not a JSON line ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
        raise InputError(f"{where}: no custom_id")
    for key in ("method", "url"):
        if not isinstance(obj.get(key), str):
            raise InputError(f"{where}: no {key}")
    body = obj.get("body")
    if obj["url"] == CHAT_URL and not (isinstance(body, dict) and isinstance(body.get("messages"), list)):
        raise InputError(f"{where}: body is not a chat completion request (an object with messages)")
    return obj


def answer_line(req: dict[str, Any], cfg: RunBatchConfig) -> dict[str, Any]:
    """The output line of one request line."""
    cid, url = req["custom_id"], req["url"]
    if url != CHAT_URL:
        return _error_line(cid, 400, f"URL {url} was used. Supported endpoints: {CHAT_URL}")
    body = req["body"]
    messages = body["messages"]
    digest = conversation_digest(messages)
    u = _draw(cfg.seed, cid, digest)
    if u < cfg.p_error:
        return _error_line(cid, 400, _error_response("simulated engine error", "BadRequestError", 400))
    if u < cfg.p_error + cfg.p_exception:
        return _error_line(cid, 400, "simulated exception in the engine")
    try:
        prompt = read_prompt(messages)
    except PromptError as e:
        return _error_line(cid, 400, _error_response(f"unrecognised prompt: {e}", "BadRequestError", 400,
                                                     "messages"))
    first_ask = not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
    fault = "nonjson" if first_ask and u < cfg.p_error + cfg.p_exception + cfg.p_nonjson else None
    top, temperature = logprobs_asked(body)  # a line that asked logprobs is answered with them, as vLLM does
    c = complete(prompt, messages, digest, cfg.seed, fault, top_logprobs=top, temperature=temperature)
    model = cfg.model or model_of(body, SimConfig.model)
    return {"id": _vllm_id("vllm"), "custom_id": cid,
            "response": {"status_code": 200, "request_id": _vllm_id("vllm-batch"),
                         "body": completion_body(_vllm_id("chatcmpl"), model, c)},
            "error": None}


def run_batch(source: Path, dest: Path, cfg: RunBatchConfig) -> Counter[str]:
    """Answer every request line of ``source`` into ``dest``; counts of ``ok`` and ``error`` lines."""
    requests = []
    with open(source, "rb") as f:
        for n, raw in enumerate(f, 1):
            if raw.strip():  # vLLM's runner skips blank lines
                requests.append(request_of(raw, f"{source} line {n}"))
    counts: Counter[str] = Counter()
    with open(dest, "wb") as out:
        for req in requests:
            line = answer_line(req, cfg)
            counts["error" if line["error"] is not None else "ok"] += 1
            out.write(orjson.dumps(line) + b"\n")
    return counts


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser(
        "sim-server run-batch",
        description="Answer a file of OpenAI batch request lines as vLLM's 'vllm run-batch' does: one output "
                    "line per request, in input order, each chat request answered by the simulator.")
    ap.add_argument("-i", "--input-file", required=True, type=Path, help="the request lines (JSONL)")
    ap.add_argument("-o", "--output-file", required=True, type=Path, help="where the output lines go")
    ap.add_argument("--model", default=None, help="the model name every answer carries (default: the request's)")
    ap.add_argument("--seed", type=non_negative_int, default=0, help="seed of the drawn faults and the wording (default 0)")
    for kind, what in (("error", "an ErrorResponse line (HTTP 400, body null)"),
                       ("exception", "an error line holding an exception's text"),
                       ("nonjson", "a 200 whose reply holds no JSON (first asks only)")):
        ap.add_argument(f"--p-{kind}", dest=f"p_{kind}", type=probability, default=0.0, metavar="P",
                        help=f"share of the lines that are {what} (default 0)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = RunBatchConfig(args.model, args.seed, args.p_error, args.p_exception, args.p_nonjson)
    cfg.validate()
    counts = run_batch(args.input_file, args.output_file, cfg)
    print(f"run-batch: {counts['ok'] + counts['error']} line(s) written to {args.output_file}: "
          f"{counts['ok']} answered, {counts['error']} error(s)", file=sys.stderr)
    return 0
