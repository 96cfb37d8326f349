"""The simulated Batch API's state and a batch's lifecycle, without HTTP.

A batch really is processed: every line's body is read back with
:func:`~liveroom.sim.prompt.read_prompt` and answered by
:func:`~liveroom.sim.completion.complete`, exactly as the same request in
direct mode. Its lifecycle moves one step every ``polls_per_step``
retrievals: ``validating`` -> ``in_progress`` (half the lines counted) ->
``in_progress`` (all) -> ``finalizing`` -> ``completed`` (or ``expired`` /
``failed``; a cancel ends it ``cancelled`` at the next retrieval).

A :class:`SimProfile` makes it answer as one provider documents its Batch API
(``docs/PROVIDERS.md`` section 4): OpenAI; Zhipu (``/api/paas/v4``, line url
``/v4/chat/completions``, no ``GET /files/{id}``, files over its size limit
answered HTTP 435, timestamps in milliseconds and ``''`` for a missing file id,
as its SDK's test comments show); DashScope (``/compatible-mode/v1``, windows
24h..336h, a limit per line, error lines ``{"error": {"code", "message"}}``
without a response).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from .completion import complete, completion_body, conversation_digest, error_object, logprobs_asked, model_of
from .config import SimConfig
from .prompt import PromptError, read_prompt

STEPS = ("validating", "in_progress", "in_progress", "finalizing")  # then the end state
TERMINAL = ("completed", "failed", "expired", "cancelled")
MB = 1_000_000

#: (HTTP status, body) of a line refused by the provider's content filter
Refusal = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class SimProfile:
    """How one provider's Batch API answers."""

    name: str
    prefix: str                     # the path of its base URL
    endpoint: str                   # the line url and batch endpoint it takes
    window_hours: tuple[int, int] | None  # completion_window it takes; None: the field is not read
    file_route: bool                # GET /files/{id} exists
    max_file_bytes: int
    too_large_status: int           # the answer to an upload over max_file_bytes
    max_line_bytes: int | None
    filtered: Refusal | None        # a content-filtered line, as the provider answers it
    error_only_lines: bool = False  # failed lines carry error{code, message} and no response
    ms_timestamps: bool = False
    no_file: str | None = None      # what an output/error file id reads as while there is none


SIM_PROFILES: dict[str, SimProfile] = {p.name: p for p in (
    SimProfile("openai", "/v1", "/v1/chat/completions", (24, 24), True, 200 * MB, 400, None, None),
    # 435 for a file over 100 MB (ZP-code HTTP table); 1301 as seen in langchain4j#1079
    SimProfile("zhipu", "/api/paas/v4", "/v4/chat/completions", None, False, 100 * MB, 435, None,
               (400, {"error": {"code": "1301", "message": "系统检测到输入或生成内容可能包含不安全或敏感内容，"
                                                           "请您避免输入易产生敏感内容的提示语，感谢您的配合。"}}),
               ms_timestamps=True, no_file=""),
    # 500 MB for purpose=batch; 6 MB per line and 24h..336h as cautious defaults (not confirmed);
    # data_inspection_failed as seen in camel-ai/owl#432
    SimProfile("dashscope", "/compatible-mode/v1", "/v1/chat/completions", (24, 336), True, 500 * MB, 400,
               6 * MB, (400, {"error": {"code": "data_inspection_failed", "param": None,
                                        "message": "Input data may contain inappropriate content.",
                                        "type": "data_inspection_failed"}}),
               error_only_lines=True),
)}


@dataclass
class BatchConfig:
    sim: SimConfig = field(default_factory=SimConfig)
    polls_per_step: int = 1        # retrievals per lifecycle step
    file_delay_s: float = 0.0      # an upload is unknown (404) for this long
    error_every: int = 0           # every Nth line (input order) ends in the error file (HTTP 500 body)
    nonjson_every: int = 0         # every Nth line that is a first ask is answered with prose, no JSON
    nonjson_reasks: bool = False   # ... re-ask lines too
    filter_every: int = 0          # every Nth line is refused by the profile's content filter
    expire_after: int | None = None  # do only this many lines, then end as expired
    shuffle: bool = False          # output lines in a random order
    api_fail_first: int = 0        # the first N Batch API calls get 503
    create_delay_s: float = 0.0    # POST /batches answers after this long
    profile: str = "openai"        # a name in SIM_PROFILES
    file_route: bool | None = None       # GET /files/{id}; None: the profile's
    max_file_bytes: int | None = None    # None: the profile's
    max_line_bytes: int | None = None    # None: the profile's

    @property
    def provider(self) -> SimProfile:
        """The profile, with the settings given here in place of its own."""
        p = SIM_PROFILES[self.profile]
        return replace(p, file_route=p.file_route if self.file_route is None else self.file_route,
                       max_file_bytes=self.max_file_bytes or p.max_file_bytes,
                       max_line_bytes=self.max_line_bytes or p.max_line_bytes)

    def check_window(self, window: Any) -> str | None:
        """Why ``completion_window`` is refused, or None when the profile takes it."""
        hours = self.provider.window_hours
        if hours is None:
            return None
        m = re.fullmatch(r"([0-9]+)h", window) if isinstance(window, str) else None
        if m is None or not hours[0] <= int(m.group(1)) <= hours[1]:
            return "completion_window must be '24h'" if hours == (24, 24) else \
                f"completion_window must be between {hours[0]}h and {hours[1]}h"
        return None


@dataclass
class Batch:
    obj: dict[str, Any]
    lines: list[dict[str, Any]]     # the validated input lines
    errors: list[dict[str, Any]]    # validation errors: the batch fails
    polls: int = 0
    cancel_at: int | None = None    # lines done when a cancel came


class SimBatchAPI:
    """Files, batches and counters of one running Batch API."""

    def __init__(self, config: BatchConfig):
        self.config = config
        self.profile = config.provider
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, Batch] = {}
        self.counts: Counter[str] = Counter()
        self.per_file: Counter[str] = Counter()
        self.fail_left = config.api_fail_first
        self.next_id = 0

    def new_id(self, prefix: str) -> str:
        """``file-000001``; Zhipu's look like ``20240514_ea19d21b-…`` (its SDK's test comments)."""
        self.next_id += 1
        if self.profile.name == "zhipu" and prefix == "file":
            return time.strftime("%Y%m%d_") + f"{self.next_id:08x}-0000-4000-8000-000000000000"
        return f"{prefix}-{self.next_id:06d}"

    def now(self) -> int:
        """A timestamp as the profile writes them (Zhipu: milliseconds)."""
        return int(time.time() * 1000) if self.profile.ms_timestamps else int(time.time())

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "batches_per_file": dict(self.per_file)}

    def visible(self, file_id: str) -> dict[str, Any] | None:
        """The file object, or None while it is unknown (not uploaded, or still invisible)."""
        f = self.files.get(file_id)
        if f is None or time.time() < f["_visible_at"]:
            return None
        return {k: v for k, v in f.items() if not k.startswith("_")}

    def store(self, data: bytes, filename: str, purpose: str, delay_s: float = 0.0) -> str:
        """Keep a file; it becomes visible after ``delay_s``."""
        fid = self.new_id("file")
        now = time.time()
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": self.now(),
                           "filename": filename, "purpose": purpose, "status": "processed",
                           "_visible_at": now + delay_s if delay_s else 0}
        self.contents[fid] = data
        return fid


def validate(data: bytes, endpoint: str, max_line_bytes: int | None = None
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the usable lines, the validation errors) of an input file."""
    lines, errors, ids = [], [], set()
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        if max_line_bytes is not None and len(raw) + 1 > max_line_bytes:
            errors.append({"code": "line_too_large", "line": n,
                           "message": f"line {n} is {len(raw) + 1} bytes, over the limit of {max_line_bytes}"})
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                           "line": n})
            continue
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        if not isinstance(cid, str) or not cid:
            errors.append({"code": "missing_required_parameter", "message": "custom_id is required", "line": n})
        elif cid in ids:
            errors.append({"code": "duplicate_custom_id", "message": f"duplicate custom_id {cid!r}", "line": n})
        elif obj.get("method") != "POST" or obj.get("url") != endpoint:
            errors.append({"code": "invalid_url", "message": f"method must be POST and url {endpoint}", "line": n})
        elif not isinstance(obj.get("body"), dict):
            errors.append({"code": "invalid_request", "message": "body must be an object", "line": n})
        else:
            ids.add(cid)
            lines.append(obj)
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The input file is empty.", "line": None})
    return lines, errors


def new_batch(bs: SimBatchAPI, fid: str, endpoint: str, window: str | None, metadata: Any) -> Batch:
    """A ``validating`` batch of input file ``fid`` (which must be visible)."""
    lines, errors = validate(bs.contents[fid], endpoint, bs.profile.max_line_bytes)
    bid = bs.new_id("batch")
    now = bs.now()
    window = window or "24h"
    hours = int(window[:-1]) if window[:-1].isdigit() else 24
    scale = 1000 if bs.profile.ms_timestamps else 1
    no = bs.profile.no_file
    obj = {"id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": fid,
           "completion_window": window, "status": "validating", "output_file_id": no, "error_file_id": no,
           "created_at": now, "in_progress_at": None, "expires_at": now + hours * 3600 * scale,
           "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
           "cancelling_at": None, "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
           "metadata": metadata}
    bs.batches[bid] = b = Batch(obj, lines, errors)
    bs.counts["batches_created"] += 1
    bs.per_file[fid] += 1
    return b


def done_lines(bs: SimBatchAPI, b: Batch, step: int) -> int:
    """How many input lines are done at lifecycle ``step``."""
    n = len(b.lines)
    if bs.config.expire_after is not None:
        n = min(n, bs.config.expire_after)
    if b.cancel_at is not None:
        return min(n, b.cancel_at)
    return 0 if step <= 0 else (n // 2 if step == 1 else n)


def _line(rid: str, custom_id: str, status: int, body: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": rid, "custom_id": custom_id,
                         "response": {"status_code": status, "request_id": rid, "body": body}, "error": None})


def _failed(bs: SimBatchAPI, rid: str, custom_id: str, status: int, body: dict[str, Any]) -> bytes:
    """A failed line: as OpenAI writes it (the response holds the error), or DashScope's error{code, message}."""
    if not bs.profile.error_only_lines:
        return _line(rid, custom_id, status, body)
    err = body.get("error") or {}
    return orjson.dumps({"id": rid, "custom_id": custom_id, "response": None,
                         "error": {"code": err.get("code") or err.get("type"), "message": err.get("message")}})


def _fault(cfg: BatchConfig, n: int, messages: list[Any]) -> str | None:
    """The content fault of line ``n``: prose for every ``nonjson_every``-th first ask."""
    reask = any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
    if cfg.nonjson_every and n % cfg.nonjson_every == 0 and (cfg.nonjson_reasks or not reask):
        return "nonjson"
    return None


def failing(cfg: BatchConfig, n: int) -> bool:
    """Line ``n`` ends in the error file (a server error or the content filter)."""
    return bool(cfg.error_every and n % cfg.error_every == 0) or \
        bool(cfg.filter_every and n % cfg.filter_every == 0 and cfg.provider.filtered)


def process(bs: SimBatchAPI, b: Batch, upto: int) -> tuple[list[bytes], list[bytes]]:
    """Output and error lines for the first ``upto`` input lines."""
    cfg = bs.config
    sim = cfg.sim
    filtered = bs.profile.filtered
    out, err = [], []
    for n, line in enumerate(b.lines[:upto], 1):
        rid, cid = f"batch_req_{b.obj['id']}_{n}", line["custom_id"]
        if cfg.error_every and n % cfg.error_every == 0:
            msg = "The server had an error processing your request (simulated)."
            err.append(_failed(bs, rid, cid, 500, error_object(msg, "server_error")))
            continue
        if cfg.filter_every and n % cfg.filter_every == 0 and filtered is not None:
            err.append(_failed(bs, rid, cid, *filtered))
            continue
        messages = line["body"].get("messages") or []
        try:
            prompt = read_prompt(messages)
        except PromptError as e:
            err.append(_failed(bs, rid, cid, 400, error_object(f"unrecognised prompt: {e}", "invalid_request_error",
                                                                None, "messages")))
            continue
        top, temperature = logprobs_asked(line["body"])  # a line that asked logprobs is answered with them
        top = None if sim.no_logprobs else top
        c = complete(prompt, messages, conversation_digest(messages), sim.seed, _fault(cfg, n, messages),
                     top_logprobs=top, temperature=temperature)
        out.append(_line(rid, cid, 200, completion_body(f"chatcmpl-{rid}", model_of(line["body"], sim.model), c)))
    if cfg.shuffle:
        random.Random(sim.seed).shuffle(out)
        random.Random(sim.seed + 1).shuffle(err)
    return out, err


def _store_lines(bs: SimBatchAPI, lines: list[bytes], purpose: str) -> str | None:
    return bs.store(b"\n".join(lines) + b"\n", f"{purpose}.jsonl", purpose) if lines else bs.profile.no_file


def finish(bs: SimBatchAPI, b: Batch, status: str) -> None:
    """End ``b`` as ``status``: its output and error files written, its counts final."""
    o = b.obj
    upto = done_lines(bs, b, len(STEPS))
    out, err = process(bs, b, upto)
    if status == "expired":
        for n, line in enumerate(b.lines[upto:], upto + 1):
            err.append(orjson.dumps({"id": f"batch_req_{o['id']}_{n}", "custom_id": line["custom_id"],
                                     "response": None, "error": {
                                         "code": "batch_expired",
                                         "message": "This request could not be executed before the "
                                                    "completion window expired."}}))
    o["output_file_id"] = _store_lines(bs, out, "batch_output")
    o["error_file_id"] = _store_lines(bs, err, "batch_output")
    o["request_counts"] = {"total": len(b.lines), "completed": len(out), "failed": len(err)}
    o["status"] = status
    o[f"{status}_at"] = bs.now()


def advance(bs: SimBatchAPI, b: Batch) -> None:
    """One retrieval of ``b``: a step forward every ``polls_per_step`` of them."""
    o = b.obj
    if o["status"] in TERMINAL:
        return
    b.polls += 1
    if o["status"] == "cancelling":
        finish(bs, b, "cancelled")
        return
    step = b.polls // max(1, bs.config.polls_per_step)
    if step >= 1 and b.errors:
        o.update(status="failed", failed_at=bs.now(), errors={"object": "list", "data": b.errors})
        return
    if step >= len(STEPS):
        expired = bs.config.expire_after is not None and bs.config.expire_after < len(b.lines)
        finish(bs, b, "expired" if expired else "completed")
        return
    o["status"] = STEPS[step]
    if step >= 1:
        o["in_progress_at"] = o["in_progress_at"] or bs.now()
        done = done_lines(bs, b, step)
        failed = sum(1 for n in range(1, done + 1) if failing(bs.config, n))
        o["request_counts"] = {"total": len(b.lines), "completed": done - failed, "failed": failed}
    if o["status"] == "finalizing":
        o["finalizing_at"] = bs.now()


def cancel(bs: SimBatchAPI, b: Batch) -> None:
    """Mark ``b`` cancelling: the lines done so far are kept."""
    bs.counts["cancels"] += 1
    step = b.polls // max(1, bs.config.polls_per_step)
    b.cancel_at = done_lines(bs, b, step)
    b.obj.update(status="cancelling", cancelling_at=bs.now())
