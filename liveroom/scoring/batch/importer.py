"""Provider output and error files -> checkpoint records, as direct mode writes them.

Lines are matched by ``custom_id`` in any order and replies parsed with the
stage's parser: one record per request, ``ok``, ``invalid`` (an unusable
reply: the next prepare re-asks it) or ``error`` (the provider's error). A
record's ``reasks`` is the number of invalid records its id had before, so
the checkpoint shows each attempt of a request across batch rounds.

Failed lines come in two shapes, both read: OpenAI's (``response`` with a
non-200 ``status_code`` and an error ``body``) and ``error: {code, message}``
without a response (DashScope's, per issue 13; Zhipu documents neither, see
docs/PROVIDERS.md section 4). The provider's code is kept in the record's
``error``; a content filter's code (:func:`~liveroom.async_client.providers.is_content_filter`)
or a ``finish_reason`` saying the reply was filtered makes it start
``content_filter:``.

Requests already ok are skipped; duplicate lines, unknown ids and unreadable
lines are counted and shown, never imported twice; a file imported once
(by its hash) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import orjson

from ...async_client.checkpoint import Checkpoint, sha256_file
from ...async_client.errors import GarbledBody, UnusableReply
from ...async_client.providers import filtered_finish, is_content_filter
from ...async_client.record import ERROR, INVALID, OK, Record
from ...async_client.transport import error_info, error_text, read_completion, redact
from ...errors import InputError
from ...prompts.stages import STAGES
from .state import BatchState, done_ids, invalid_records, load_meta, read_manifest, shard_ids

SHOWN = 5  # examples shown per kind of problem
CONTENT_FILTER = "content_filter"


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


# ----------------------------------------------------------------- one line -> one record

def _response(obj: dict[str, Any]) -> tuple[Any, Any]:
    """A line's HTTP status code and body (decoded when it is a JSON string)."""
    resp = obj.get("response")
    code = resp.get("status_code") if isinstance(resp, dict) else None
    body = resp.get("body") if isinstance(resp, dict) else None
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return code, body


def _finish_reason(body: Any) -> str | None:
    try:
        reason = body["choices"][0]["finish_reason"]
    except (KeyError, IndexError, TypeError):
        return None
    return reason if isinstance(reason, str) else None


def _completed(cid: str, body: Any, meta: dict[str, Any]) -> Record:
    """A 200 line: its completion read as direct mode reads one, its reply checked by the stage's parser."""
    if filtered_finish(reason := _finish_reason(body)):
        return Record(cid, ERROR, meta, error=f"{CONTENT_FILTER}: finish_reason {reason}")
    try:
        reply = read_completion(body)
    except GarbledBody as e:
        return Record(cid, ERROR, meta, error=f"unreadable response body ({e.detail})")
    try:
        scores = STAGES[meta["stage"]].parse(reply.text, meta.get("n_items", 0))
    except UnusableReply as e:
        return Record(cid, INVALID, meta, reply=reply.text, usage=reply.usage, error=str(e))
    return Record(cid, OK, meta, scores=scores, reply=reply.text, usage=reply.usage)


def _failure(code: Any, body: Any, err: Any) -> str:
    """What went wrong with a line that has no usable completion, the provider's code in it."""
    if code is not None:
        text, provider_code = f"HTTP {code}: {error_text(body)}", error_info(body)[1]
    elif err:
        text, provider_code = error_text(err), error_info(err)[1]
    else:
        return "the line has neither a response nor an error"
    return f"{CONTENT_FILTER}: {text}" if is_content_filter(provider_code) else text


def line_record(obj: dict[str, Any], meta: dict[str, Any], key: str | None) -> Record:
    """The checkpoint record of one provider output/error line, as direct mode writes it."""
    cid = obj["custom_id"]
    code, body = _response(obj)
    if code == 200:
        rec = _completed(cid, body, meta)
    else:
        rec = Record(cid, ERROR, meta, error=_failure(code, body, obj.get("error")))
    if rec.error:
        rec.error = redact(rec.error, key)
    return rec


# ----------------------------------------------------------------- files -> checkpoint

def import_files(run_dir: Path, state: BatchState, files: Sequence[Path], key: str | None,
                 report: ImportReport | None = None) -> ImportReport:
    """Import provider files into the checkpoint (``key`` is masked in errors); the caller saves ``state``."""
    run_dir = Path(run_dir)
    report = report or ImportReport()
    manifest = read_manifest(run_dir)
    meta = load_meta(run_dir, state)
    chosen: dict[str, Record] = {}  # parsed first: one record per id, ok preferred
    new_files: dict[str, str] = {}
    for path in map(Path, files):
        digest = _digest(path)
        if digest in state.imported or digest in new_files:
            report.files_skipped.append(path.name)
            continue
        new_files[digest] = path.name
        _read_file(path, meta, key, chosen, report)
    _write_records(run_dir, manifest, chosen, report)
    state.imported.update(new_files)
    return report


def _digest(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _custom_id(line: bytes) -> tuple[dict[str, Any], str] | None:
    """A line's object and its custom_id, or None when it has none."""
    try:
        obj = orjson.loads(line)
        cid = obj["custom_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return (obj, cid) if isinstance(cid, str) else None


def _read_file(path: Path, meta: dict[str, dict[str, Any]], key: str | None,
               chosen: dict[str, Record], report: ImportReport) -> None:
    """Every line of one file into ``chosen``; unreadable lines and unknown ids counted."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parsed = _custom_id(line)
            if parsed is None:
                report.malformed += 1
                report.example("unreadable lines", f"{path.name} line {n}")
                continue
            obj, cid = parsed
            if cid not in meta:
                report.unknown += 1
                report.example("unknown ids", f"{cid!r} ({path.name} line {n})")
                continue
            _choose(chosen, line_record(obj, meta[cid], key), report, f"{path.name} line {n}")


def _choose(chosen: dict[str, Record], rec: Record, report: ImportReport, where: str) -> None:
    """Keep ``rec`` unless its id has a record already: a duplicate, that wins only ok over failed."""
    cid = rec.id
    old = chosen.get(cid)
    if old is not None:
        report.duplicates += 1
        report.example("duplicate lines", f"{cid} ({where})")
        if old.ok or not rec.ok:
            return
    chosen[cid] = rec


def _write_records(run_dir: Path, manifest: dict[str, Any], chosen: dict[str, Record],
                   report: ImportReport) -> None:
    """Append the chosen records of requests not already ok, counting each (and its re-asks)."""
    groups = manifest.get("groups", {})
    tried = {cid: len(recs) for cid, recs in invalid_records(run_dir, groups).items()} if chosen else {}
    checkpoint = Checkpoint(run_dir)
    checkpoint.open(manifest)
    try:
        done = {g: checkpoint.done(g) for g in groups}
        for cid, rec in chosen.items():
            stage = rec.meta["stage"]
            if stage not in done:
                report.unknown += 1
                report.example("unknown ids", f"{cid!r} (stage {stage} is not in the run)")
                continue
            report.seen.add(cid)
            if cid in done[stage]:
                report.already_ok += 1
                continue
            rec.reasks = tried.get(cid, 0)
            checkpoint.write(stage, rec)
            _count(report, cid, rec)
            if rec.ok:
                done[stage].add(cid)
    finally:
        checkpoint.close()


def _count(report: ImportReport, cid: str, rec: Record) -> None:
    if rec.ok:
        report.ok += 1
    else:
        setattr(report, rec.status, getattr(report, rec.status) + 1)
        report.example(f"{rec.status} replies", f"{cid}: {rec.error}")


def finish_covered(run_dir: Path, state: BatchState, seen: set[str]) -> list[str]:
    """Mark submitted files whose every request is now accounted for as finished; their names."""
    if not seen:
        return []
    done = done_ids(run_dir, read_manifest(run_dir))
    names = []
    for shard in state.shards:
        if shard.submitted and not shard.finished and shard_ids(run_dir, shard) <= (seen | done):
            shard.finished = True
            shard.note = "imported by hand"
            names.append(shard.name)
    return names
