"""``bin/batch``: score through an OpenAI-compatible Batch API into a run directory.

The same run directory as ``bin/score`` (same manifest, same per-stage JSONL
records), so the bulk can go by batch at the provider's batch price and the
stragglers be finished with ``bin/score``; ``bin/collect`` reads either.

::

    bin/batch prepare --pitches P.csv --goods G.json --out RUN_DIR [--model M] [--stages ...]
    bin/batch submit  --run RUN_DIR      # upload + create one batch per prepared file
    bin/batch status  --run RUN_DIR      # one line per file
    bin/batch fetch   --run RUN_DIR [--wait]   # poll, download, import
    bin/batch import  --run RUN_DIR FILE...    # output/error files obtained by hand
    bin/batch cancel  --run RUN_DIR      # cancel the batches still running

Layout under ``RUN_DIR/batch/``:

* ``requests-NNNN.jsonl``: request lines ``{"custom_id", "method": "POST",
  "url", "body"}``, the body being exactly what direct mode sends;
* ``requests-NNNN.meta.jsonl``: per request the record fields direct mode
  keeps beside the reply (stage, index, persona, n_items), read by import;
* ``requests-NNNN.output.jsonl`` / ``.errors.jsonl``: the provider's files;
* ``state.json`` (written atomically): per file its upload id, batch id,
  status and request counts, so ``submit`` never makes a second batch for a
  file and resumes an upload that has no batch yet.

A file whose batch has ended (completed, failed, expired, cancelled) and has
been imported is *finished*: ``prepare`` asks again for whatever of it is
still not ok. The requests of files submitted and not yet finished are left
out of ``prepare`` (they are still on their way) unless ``--include-submitted``.

Import matches lines by ``custom_id`` in any order, parses replies with the
stage's parser, as direct mode does, and appends one record per request:
``ok``, ``invalid`` (an unusable reply; batch mode does not re-ask) or
``error`` (the provider's error). Requests already ok are skipped, duplicate
lines and unknown ids are reported, never imported twice.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import hashlib
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Sequence
from urllib.parse import urlsplit

import orjson

from ..errors import InputError, LiveroomError
from ..prompts.replies import ReplyError
from ..prompts.stages import STAGES
from ..async_client.batch_api import BatchClient, FileFailed
from ..async_client.checkpoint import MANIFEST, Checkpoint, atomic_write, check_manifest, sha256_file
from ..async_client.http import endpoint_host, redact
from .plan import ModelParams, make_plan, plan_jobs, scan_done
from .score import DEFAULT_BASE_URL, add_request_arguments

BATCH_DIR = "batch"
STATE = "state.json"
LOCK = ".lock"
DEFAULT_ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
TERMINAL = ("completed", "failed", "expired", "cancelled")
SHOWN = 5  # examples shown per kind of problem

_CUSTOM_ID = re.compile(rb'^\{"id":"((?:[^"\\]|\\.)*)"', re.M)


# ----------------------------------------------------------------- run directory

def batch_dir(run_dir: Path) -> Path:
    return Path(run_dir) / BATCH_DIR


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{run_dir}: not a run directory (no {MANIFEST}); run bin/batch prepare first") from None
    except orjson.JSONDecodeError as e:
        raise InputError(f"{path}: unreadable ({e})") from None


def load_state(run_dir: Path) -> dict[str, Any]:
    path = batch_dir(run_dir) / STATE
    if not path.exists():
        return {"format": 1, "shards": [], "imported": {}}
    try:
        state = orjson.loads(path.read_bytes())
        if not isinstance(state, dict) or not isinstance(state.get("shards"), list):
            raise ValueError("no list of shards")
    except (orjson.JSONDecodeError, ValueError) as e:
        raise LiveroomError(f"{path}: unreadable batch state ({e})") from None
    state.setdefault("imported", {})
    return state


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(batch_dir(run_dir) / STATE, orjson.dumps(state, option=orjson.OPT_INDENT_2))


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """One ``bin/batch`` at a time per run directory."""
    d = batch_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / LOCK, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LiveroomError(f"another bin/batch is working on {run_dir}; wait for it to end") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def submitted(shard: dict[str, Any]) -> bool:
    return bool(shard.get("file_id") or shard.get("batch_id"))


def shard_ids(run_dir: Path, shard: dict[str, Any]) -> set[str]:
    path = batch_dir(run_dir) / shard["meta"]
    if not path.exists():
        raise LiveroomError(f"{path}: missing; it lists the requests of {shard['name']}")
    return {m.decode() for m in _CUSTOM_ID.findall(path.read_bytes())}


def load_meta(run_dir: Path, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Request id -> the record fields of every prepared request."""
    meta: dict[str, dict[str, Any]] = {}
    d = batch_dir(run_dir)
    for shard in state["shards"]:
        path = d / shard["meta"]
        if not path.exists():
            continue
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    m = orjson.loads(line)
                    meta[m.pop("id")] = m
    return meta


def pending_ids(run_dir: Path, state: dict[str, Any]) -> set[str]:
    """Ids in files submitted and not yet finished: still on their way."""
    out: set[str] = set()
    for shard in state["shards"]:
        if submitted(shard) and not shard.get("finished"):
            out |= shard_ids(run_dir, shard)
    return out


def resolve_base_url(arg: str | None, manifest: dict[str, Any], run_dir: Path) -> str:
    """``--base-url``, else ``$OPENAI_BASE_URL`` when it is the run's endpoint, else the run's endpoint."""
    want = manifest.get("endpoint") or endpoint_host(DEFAULT_BASE_URL)
    env = os.environ.get("OPENAI_BASE_URL")
    url = arg or (env if env and endpoint_host(env) == want else want)
    if url != want and endpoint_host(url) != want:
        raise InputError(f"{run_dir} was prepared for {want}, not {endpoint_host(url)}; "
                         "use the same --base-url, or another run directory")
    return url


def counts_text(shard: dict[str, Any]) -> str:
    c = shard.get("request_counts") or {}
    return f"{c.get('completed', 0)}/{c.get('failed', 0)}/{c.get('total', shard.get('requests', 0))}"


def shard_line(shard: dict[str, Any]) -> str:
    status = shard.get("status") or "prepared"
    extra = " finished" if shard.get("finished") else ""
    note = f" ({shard['note']})" if shard.get("note") else ""
    return (f"{shard['name']}  {shard.get('batch_id') or '-'}  {status}  "
            f"{counts_text(shard)} completed/failed/total{extra}{note}")


def update_from_batch(shard: dict[str, Any], b: dict[str, Any]) -> bool:
    """Copy a batch object's progress into ``shard``; True when something shown changed."""
    before = (shard.get("status"), counts_text(shard))
    shard["status"] = str(b.get("status") or shard.get("status"))
    rc = b.get("request_counts")
    if isinstance(rc, dict):
        shard["request_counts"] = {k: int(rc.get(k) or 0) for k in ("total", "completed", "failed")}
    for k in ("output_file_id", "error_file_id"):
        if b.get(k):
            shard[k] = b[k]
    errors = (b.get("errors") or {}).get("data") if isinstance(b.get("errors"), dict) else None
    if errors:
        shard["note"] = "; ".join(
            str(e.get("message") or e.get("code")) + (f" (line {e['line']})" if e.get("line") else "")
            for e in errors[:3] if isinstance(e, dict))
    return before != (shard.get("status"), counts_text(shard))


# ----------------------------------------------------------------- import

@dataclass
class ImportReport:
    ok: int = 0
    invalid: int = 0
    error: int = 0
    already_ok: int = 0
    duplicates: int = 0
    unknown: int = 0
    malformed: int = 0
    files_skipped: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def example(self, kind: str, text: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < SHOWN:
            shown.append(text)

    @property
    def failed(self) -> int:
        return self.invalid + self.error

    def lines(self, prog: str = "batch") -> list[str]:
        out = [f"{prog}: imported {self.ok} ok, {self.invalid} invalid, {self.error} error; "
               f"{self.already_ok} already ok, {self.duplicates} duplicate line(s), "
               f"{self.unknown} unknown id(s), {self.malformed} unreadable line(s)"]
        for name in self.files_skipped:
            out.append(f"{prog}: {name}: already imported, skipped")
        for kind, shown in self.examples.items():
            out.append(f"{prog}: {kind}: " + "; ".join(shown))
        return out


def _error_text(obj: Any) -> str:
    if isinstance(obj, dict):
        inner = obj.get("error") if isinstance(obj.get("error"), dict) else obj
        msg = str(inner.get("message") or "").strip()
        code = str(inner.get("code") or inner.get("type") or "").strip()
        return ": ".join(x for x in (code, msg) if x) or orjson.dumps(obj).decode()[:200]
    return str(obj)[:200]


def line_record(obj: dict[str, Any], meta: dict[str, Any], key: str | None) -> dict[str, Any]:
    """The checkpoint record of one provider output/error line, as direct mode writes it."""
    text: str | None = None
    usage: dict[str, int] = {}
    scores: Any = None
    status, error = "error", None
    resp, err = obj.get("response"), obj.get("error")
    code = resp.get("status_code") if isinstance(resp, dict) else None
    body = resp.get("body") if isinstance(resp, dict) else None
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    if code == 200:
        try:
            text = body["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            raw = body.get("usage") or {}
            usage = {k: v for k, v in raw.items() if isinstance(v, int)}
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            text, error = None, f"unreadable response body ({type(e).__name__}: {e})"
        else:
            try:
                scores = STAGES[meta["stage"]].parse(text, meta.get("n_items", 0))
                status = "ok"
            except ReplyError as e:
                status, error = "invalid", str(e)
    elif code is not None:
        error = f"HTTP {code}: {_error_text(body)}"
    elif err:
        error = _error_text(err)
    else:
        error = "the line has neither a response nor an error"
    if error:
        error = redact(error, key)
    return {"id": obj["custom_id"], "status": status, **meta, "scores": scores, "reply": text,
            "usage": usage, "attempts": 1, "reasks": 0, "latency_ms": None, "error": error,
            "t": round(time.time(), 3)}


def import_files(run_dir: Path, state: dict[str, Any], files: Sequence[Path],
                 report: ImportReport | None = None) -> ImportReport:
    """Import provider files into the checkpoint; the caller saves ``state``."""
    run_dir = Path(run_dir)
    report = report or ImportReport()
    manifest = read_manifest(run_dir)
    meta = load_meta(run_dir, state)
    key = os.environ.get("OPENAI_API_KEY") or None
    # parse everything first: one record per id, an ok line preferred over a failed one
    chosen: dict[str, dict[str, Any]] = {}
    new_files: dict[str, str] = {}
    for path in files:
        path = Path(path)
        try:
            digest = sha256_file(path)
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
        if digest in state["imported"] or digest in new_files:
            report.files_skipped.append(path.name)
            continue
        new_files[digest] = path.name
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                    cid = obj["custom_id"]
                    if not isinstance(cid, str):
                        raise TypeError
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    report.malformed += 1
                    report.example("unreadable lines", f"{path.name} line {n}")
                    continue
                if cid not in meta:
                    report.unknown += 1
                    report.example("unknown ids", f"{cid!r} ({path.name} line {n})")
                    continue
                rec = line_record(obj, meta[cid], key)
                old = chosen.get(cid)
                if old is not None:
                    report.duplicates += 1
                    report.example("duplicate lines", f"{cid} ({path.name} line {n})")
                    if old["status"] == "ok" or rec["status"] != "ok":
                        continue
                chosen[cid] = rec
    checkpoint = Checkpoint(run_dir)
    checkpoint.open(manifest)
    try:
        done = {g: checkpoint.done(g) for g in manifest.get("groups", {})}
        for cid, rec in chosen.items():
            stage = rec["stage"]
            if stage not in done:
                report.unknown += 1
                report.example("unknown ids", f"{cid!r} (stage {stage} is not in the run)")
                continue
            report.seen.add(cid)
            if cid in done[stage]:
                report.already_ok += 1
                continue
            checkpoint.write(stage, rec)
            if rec["status"] == "ok":
                report.ok += 1
                done[stage].add(cid)
            else:
                setattr(report, rec["status"], getattr(report, rec["status"]) + 1)
                report.example(f"{rec['status']} replies", f"{cid}: {rec['error']}")
    finally:
        checkpoint.close()
    state["imported"].update(new_files)
    return report


def finish_covered(run_dir: Path, state: dict[str, Any], seen: set[str]) -> list[str]:
    """Mark submitted files whose every request is now accounted for as finished."""
    if not seen:
        return []
    manifest = read_manifest(run_dir)
    checkpoint = Checkpoint(run_dir)
    done = set().union(*(checkpoint.done(g) for g in manifest.get("groups", {})))
    names = []
    for shard in state["shards"]:
        if submitted(shard) and not shard.get("finished") and shard_ids(run_dir, shard) <= (seen | done):
            shard["finished"] = True
            shard["note"] = "imported by hand"
            names.append(shard["name"])
    return names


# ----------------------------------------------------------------- prepare

def cmd_prepare(args: argparse.Namespace) -> int:
    if args.max_requests < 1:
        raise InputError("--max-requests must be at least 1")
    if args.max_bytes < 1024:
        raise InputError("--max-bytes must be at least 1024")
    if not args.endpoint.startswith("/"):
        raise InputError(f"--endpoint must be a path such as {DEFAULT_ENDPOINT}, got {args.endpoint!r}")
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    u = urlsplit(base_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"--base-url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {endpoint_host(base_url)!r}")
    params = ModelParams(args.model, args.temperature, args.max_tokens, args.response_format)
    plan = make_plan(args.pitches, args.goods, args.stages, args.personas, params, base_url)
    run_dir = Path(args.out)
    plan.manifest = check_manifest(run_dir, plan.manifest)
    state = load_state(run_dir)  # unreadable state: refused before anything is written
    with locked(run_dir):
        state = load_state(run_dir)
        d = batch_dir(run_dir)
        kept = [s for s in state["shards"] if submitted(s)]
        dropped = [s for s in state["shards"] if not submitted(s)]
        pending = set() if args.include_submitted else pending_ids(run_dir, state)
        checkpoint = Checkpoint(run_dir)
        for s in plan.stages:
            checkpoint.repair(s.name)
        done = scan_done(plan, checkpoint)
        n_done = done.count()
        for s in plan.stages:  # on their way in submitted batches: not asked again
            done.add(s.name, [i.encode() for i in pending])
        n_pending = done.count() - n_done
        jobs, _ = plan_jobs(plan, done)
        first = 1 + max((int(re.findall(r"\d+", s["name"])[0]) for s in kept), default=0)
        written = _write_shards(d, jobs, first, args)
        checkpoint.open(plan.manifest)  # the manifest bin/score would write
        checkpoint.close()
        for s in dropped:
            for name in (s["name"], s["meta"]):
                if name not in {w["name"] for w in written} | {w["meta"] for w in written}:
                    (d / name).unlink(missing_ok=True)
        for w in written:
            os.replace(d / (w["name"] + ".tmp"), d / w["name"])
            os.replace(d / (w["meta"] + ".tmp"), d / w["meta"])
        state["shards"] = kept + written
        save_state(run_dir, state)
    total = sum(w["requests"] for w in written)
    where = f"{d}/{written[0]['name']}" + (f" .. {written[-1]['name']}" if len(written) > 1 else "") if written else ""
    print(f"batch: prepared {total} request(s) in {len(written)} file(s)" + (f": {where}" if where else "")
          + (f"; {len(dropped)} earlier unsubmitted file(s) replaced" if dropped else "")
          + (f"; {n_pending} request(s) left out: in submitted batches not fetched yet" if n_pending else ""),
          file=sys.stderr)
    if total == 0:
        print(f"batch: nothing to prepare: every request is done in {run_dir} or on its way", file=sys.stderr)
    return 0


def _write_shards(d: Path, jobs: Iterator[Any], first: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    d.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, Any]] = []
    req_f = meta_f = None
    h = None
    try:
        for job in jobs:
            line = orjson.dumps({"custom_id": job.id, "method": "POST", "url": args.endpoint,
                                 "body": job.payload}) + b"\n"
            if len(line) > args.max_bytes:
                raise InputError(f"request {job.id} alone is {len(line)} bytes, over --max-bytes {args.max_bytes}")
            cur = written[-1] if written else None
            if cur is None or cur["requests"] >= args.max_requests or cur["bytes"] + len(line) > args.max_bytes:
                if cur is not None:
                    cur["sha256"] = h.hexdigest()
                    req_f.close()
                    meta_f.close()
                stem = f"requests-{first + len(written):04d}"
                cur = {"name": f"{stem}.jsonl", "meta": f"{stem}.meta.jsonl", "requests": 0, "bytes": 0,
                       "sha256": None, "endpoint": args.endpoint, "prepared_at": round(time.time(), 3),
                       "status": "prepared", "file_id": None, "batch_id": None, "finished": False}
                written.append(cur)
                req_f = open(d / (cur["name"] + ".tmp"), "wb")
                meta_f = open(d / (cur["meta"] + ".tmp"), "wb")
                h = hashlib.sha256()
            req_f.write(line)
            h.update(line)
            meta_f.write(orjson.dumps({"id": job.id, **job.meta}) + b"\n")
            cur["requests"] += 1
            cur["bytes"] += len(line)
        if written:
            written[-1]["sha256"] = h.hexdigest()
    except BaseException:
        for w in written:
            (d / (w["name"] + ".tmp")).unlink(missing_ok=True)
            (d / (w["meta"] + ".tmp")).unlink(missing_ok=True)
        raise
    finally:
        for f in (req_f, meta_f):
            if f is not None:
                f.close()
    for w in written:
        for name in (w["name"], w["meta"]):
            with open(d / (name + ".tmp"), "rb") as f:
                os.fsync(f.fileno())
    return written


# ----------------------------------------------------------------- submit

def _client(args: argparse.Namespace, base_url: str) -> BatchClient:
    return BatchClient(base_url, os.environ.get("OPENAI_API_KEY") or None, timeout=args.timeout,
                       max_retries=args.max_retries, backoff=args.backoff)


def _opened(args: argparse.Namespace) -> tuple[Path, dict[str, Any], dict[str, Any], str]:
    run_dir = Path(args.run)
    manifest = read_manifest(run_dir)
    state = load_state(run_dir)
    if not state["shards"]:
        raise InputError(f"{run_dir}: no prepared batch files; run bin/batch prepare first")
    base_url = resolve_base_url(getattr(args, "base_url", None), manifest, run_dir)
    return run_dir, manifest, state, base_url


def cmd_submit(args: argparse.Namespace) -> int:
    run_dir, manifest, state, base_url = _opened(args)
    with locked(run_dir):
        state = load_state(run_dir)
        return asyncio.run(_submit(args, run_dir, manifest, state, base_url))


async def _submit(args: argparse.Namespace, run_dir: Path, manifest: dict[str, Any], state: dict[str, Any],
                  base_url: str) -> int:
    d = batch_dir(run_dir)
    todo = [s for s in state["shards"] if not s.get("batch_id") and not s.get("finished")]
    if not todo:
        print("batch: nothing to submit: every prepared file has its batch", file=sys.stderr)
        return 0
    # everything checked before the first call
    for s in todo:
        if not s.get("file_id"):
            path = d / s["name"]
            if not path.exists():
                raise LiveroomError(f"{path}: missing; run bin/batch prepare again")
            if sha256_file(path) != s["sha256"]:
                raise LiveroomError(f"{path}: changed since prepare; run bin/batch prepare again")
    checkpoint = Checkpoint(run_dir)
    done = set().union(*(checkpoint.done(g) for g in manifest.get("groups", {})))
    rc = 0
    async with _client(args, base_url) as client:
        for s in todo:
            if not s.get("file_id"):
                stale = len(shard_ids(run_dir, s) & done)
                if stale:
                    print(f"batch: {s['name']}: {stale} of its requests are done meanwhile; not submitted; "
                          "run bin/batch prepare again", file=sys.stderr)
                    rc = 1
                    continue
                obj = await client.upload(d / s["name"])
                s["file_id"], s["status"], s["note"] = obj["id"], "uploaded", None
                save_state(run_dir, state)
                print(f"batch: {s['name']}: uploaded as {obj['id']}", file=sys.stderr)
            else:
                print(f"batch: {s['name']}: resuming with uploaded file {s['file_id']}", file=sys.stderr)
            try:
                await client.wait_file(s["file_id"], args.file_timeout, args.file_poll)
            except FileFailed as e:
                print(f"batch: {s['name']}: {e}; it will be uploaded again by the next submit", file=sys.stderr)
                s["file_id"], s["status"], s["note"] = None, "prepared", str(e)
                save_state(run_dir, state)
                rc = 1
                continue
            b = await client.find_batch(s["file_id"]) or await client.create_batch(
                s["file_id"], s["endpoint"], COMPLETION_WINDOW)
            s["batch_id"], s["note"] = b["id"], None
            update_from_batch(s, b)
            s["submitted_at"] = round(time.time(), 3)
            save_state(run_dir, state)
            print(f"batch: {s['name']}: batch {b['id']} {s['status']}", file=sys.stderr)
    return rc


# ----------------------------------------------------------------- status, fetch, cancel

def live_shards(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Shards with a batch that has not ended."""
    return [s for s in state["shards"] if s.get("batch_id") and s.get("status") not in TERMINAL]


def update_live(args: argparse.Namespace, run_dir: Path, base_url: str,
                call: Callable[[BatchClient, str], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], list]:
    """Under the run's lock, update every live shard from ``call(client, batch_id)``
    (retrieve or cancel) and save the state; returns it and the shards updated."""
    with locked(run_dir):
        state = load_state(run_dir)
        live = live_shards(state)

        async def update() -> None:
            async with _client(args, base_url) as client:
                for s in live:
                    update_from_batch(s, await call(client, s["batch_id"]))

        asyncio.run(update())
        save_state(run_dir, state)
    return state, live


def cmd_status(args: argparse.Namespace) -> int:
    run_dir, manifest, state, base_url = _opened(args)
    if live_shards(state) and not args.offline:
        state, _ = update_live(args, run_dir, base_url, BatchClient.get_batch)
    for s in state["shards"]:
        print(shard_line(s))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    run_dir, manifest, state, base_url = _opened(args)
    if args.interval <= 0:
        raise InputError("--interval must be positive")
    with locked(run_dir):
        state = load_state(run_dir)
        return asyncio.run(_fetch(args, run_dir, state, base_url))


async def _fetch(args: argparse.Namespace, run_dir: Path, state: dict[str, Any], base_url: str) -> int:
    d = batch_dir(run_dir)
    watch = [s for s in state["shards"] if s.get("batch_id") and not s.get("finished")]
    waiting = [s["name"] for s in state["shards"] if not s.get("batch_id") and not s.get("finished")]
    if waiting:
        print(f"batch: not submitted yet: {', '.join(waiting)} (run bin/batch submit)", file=sys.stderr)
    if not watch:
        print("batch: no batch to fetch", file=sys.stderr)
        return 0
    report = ImportReport()
    async with _client(args, base_url) as client:
        while True:
            for s in watch:
                if s.get("finished"):
                    continue
                if update_from_batch(s, await client.get_batch(s["batch_id"])):
                    print(f"batch: {shard_line(s)}", file=sys.stderr)
                    save_state(run_dir, state)
                if s["status"] not in TERMINAL:
                    continue
                files = []
                stem = s["name"].removesuffix(".jsonl")
                for key, suffix in (("output_file_id", "output"), ("error_file_id", "errors")):
                    if s.get(key):
                        dest = d / f"{stem}.{suffix}.jsonl"
                        await client.download(s[key], dest)
                        files.append(dest)
                import_files(run_dir, state, files, report)
                s["finished"] = True
                if s["status"] != "completed":
                    s["note"] = (s.get("note") + "; " if s.get("note") else "") + \
                        "ended early: what is missing is prepared again by the next prepare"
                save_state(run_dir, state)
                print(f"batch: {s['name']}: {s['status']}, imported {', '.join(f.name for f in files) or 'nothing'}",
                      file=sys.stderr)
            left = [s for s in watch if not s.get("finished")]
            if not left or not args.wait:
                break
            await asyncio.sleep(args.interval)
    if report.seen or report.files_skipped:
        for line in report.lines():
            print(line, file=sys.stderr)
    if left:
        print(f"batch: {len(left)} batch(es) still running; run bin/batch fetch again (or with --wait)",
              file=sys.stderr)
        return 3
    failed = report.failed + sum(1 for s in watch if s["status"] != "completed")
    if failed:
        print("batch: some requests are not ok; bin/batch prepare (then submit) or bin/score "
              "asks them again", file=sys.stderr)
        return 1
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    run_dir, manifest, state, base_url = _opened(args)
    state, live = update_live(args, run_dir, base_url, BatchClient.cancel_batch)
    for s in live:
        print(f"batch: {shard_line(s)}", file=sys.stderr)
    if not live:
        print("batch: no running batch to cancel", file=sys.stderr)
    else:
        print("batch: run bin/batch fetch --wait to import what was done", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    read_manifest(run_dir)
    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise InputError(f"{f}: no such file")
    with locked(run_dir):
        state = load_state(run_dir)
        report = import_files(run_dir, state, files)
        names = finish_covered(run_dir, state, report.seen)
        save_state(run_dir, state)
    for line in report.lines():
        print(line, file=sys.stderr)
    if names:
        print(f"batch: every request of {', '.join(names)} is now accounted for; marked finished", file=sys.stderr)
    if report.failed or report.unknown or report.malformed:
        return 1
    return 0


# ----------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batch",
        description="Score pitches through an OpenAI-compatible Batch API (e.g. GLM-4, Qwen, OpenAI), "
                    "into the same run directory as bin/score: prepare request files, submit them, "
                    "fetch and import the results; finish stragglers with bin/batch again or bin/score.",
        epilog="The API key is read from $OPENAI_API_KEY only and is never written anywhere. "
               "Exit status: 0 done, 1 some requests failed or some lines were not usable "
               "(prepare again or run bin/score to retry them), 2 bad input or fatal API error, "
               "3 (fetch without --wait) batches still running.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def api(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--run", required=True, metavar="RUN_DIR", help="the run directory of bin/batch prepare")
        sp.add_argument("--base-url", default=None,
                        help="API base URL (default: the run's endpoint; $OPENAI_BASE_URL when it is the same)")
        sp.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call (default: %(default)s)")
        sp.add_argument("--max-retries", type=int, default=6,
                        help="retries of a call on 429/5xx/connection errors (default: %(default)s)")
        sp.add_argument("--backoff", type=float, default=1.0,
                        help="first retry wait in seconds, doubling up to 60 (default: %(default)s)")

    sp = sub.add_parser("prepare", help="write the request files for what is not done yet",
                        description="Write RUN_DIR/batch/requests-NNNN.jsonl in the OpenAI batch format for "
                                    "every request not yet ok in RUN_DIR (nor on its way in a submitted batch). "
                                    "Unsubmitted files of an earlier prepare are replaced. The run manifest is "
                                    "the one bin/score with the same flags writes.")
    add_request_arguments(sp)
    sp.add_argument("--out", "--run", dest="out", required=True, metavar="RUN_DIR",
                    help="run directory (created or extended)")
    sp.add_argument("--endpoint", default=DEFAULT_ENDPOINT,
                    help="the 'url' of each request line and the batch endpoint, e.g. /v4/chat/completions "
                         "for GLM (default: %(default)s)")
    sp.add_argument("--max-requests", type=int, default=50000, help="requests per file (default: %(default)s)")
    sp.add_argument("--max-bytes", type=int, default=200_000_000, help="bytes per file (default: %(default)s)")
    sp.add_argument("--include-submitted", action="store_true",
                    help="also prepare requests of submitted batches not fetched yet (they may be paid twice)")
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("submit", help="upload each prepared file and create its batch (idempotent)",
                        description="Upload (purpose=batch) every prepared file without a batch, wait until the "
                                    "upload is visible, and create its batch (completion window 24h). Ids are kept "
                                    "in RUN_DIR/batch/state.json: running it again never makes a second batch for "
                                    "a file, and a file uploaded without a batch gets its batch without a new upload.")
    api(sp)
    sp.add_argument("--file-timeout", type=float, default=600.0,
                    help="seconds to wait for an upload to become usable (default: %(default)s)")
    sp.add_argument("--file-poll", type=float, default=2.0,
                    help="seconds between checks of an upload (default: %(default)s)")
    sp.set_defaults(func=cmd_submit)

    sp = sub.add_parser("status", help="one line per file: batch id, status, completed/failed/total")
    api(sp)
    sp.add_argument("--offline", action="store_true", help="print the recorded state without asking the server")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("fetch", help="poll the batches; download and import those that ended",
                        description="Poll every submitted batch (validating, in_progress, finalizing, then "
                                    "completed, failed, expired or cancelled); for each that ended, download its "
                                    "output and error files into RUN_DIR/batch/ and import them. A batch that ended "
                                    "early contributes what it did; the next prepare asks for the rest.")
    api(sp)
    sp.add_argument("--wait", action="store_true", help="keep polling until every batch has ended")
    sp.add_argument("--interval", type=float, default=30.0, help="seconds between polls (default: %(default)s)")
    sp.set_defaults(func=cmd_fetch)

    sp = sub.add_parser("import", help="import output/error files obtained by hand",
                        description="Import provider output or error files (lines in any order, matched by "
                                    "custom_id) into RUN_DIR. Replies are checked with the same parser as direct "
                                    "mode; requests already ok are skipped; duplicate lines and unknown ids are "
                                    "reported, never imported twice.")
    sp.add_argument("--run", required=True, metavar="RUN_DIR", help="the run directory of bin/batch prepare")
    sp.add_argument("files", nargs="+", metavar="FILE", help="provider output or error files (JSONL)")
    sp.set_defaults(func=cmd_import)

    sp = sub.add_parser("cancel", help="cancel the batches still running")
    api(sp)
    sp.set_defaults(func=cmd_cancel)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("timeout", "backoff"):
        if getattr(args, name, 1) <= 0:
            parser.error(f"--{name} must be positive")
    if getattr(args, "max_retries", 0) < 0:
        parser.error("--max-retries must be >= 0")
    return args.func(args)
