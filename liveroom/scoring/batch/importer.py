"""Provider output and error files -> run directory records, as direct mode writes them.

Lines are matched by ``custom_id`` in any order and replies parsed with the
stage's parser: one record per request, ``ok``, ``invalid`` (an unusable
reply: the next prepare re-asks it) or ``error`` (the provider's error). A
record's ``reasks`` is the number of invalid records its id had before, so
the run directory shows each attempt of a request across batch rounds.

Failed lines come in three shapes, all read: OpenAI's (``response`` with a
non-200 ``status_code`` and an error ``body``), ``error: {code, message}``
without a response (DashScope's; Zhipu documents neither, see
docs/PROVIDERS.md section 4) and vLLM's (``response`` with a non-200
``status_code`` and ``body: null``, the error beside it: section 4.1). The provider's code is kept in the record's
``error``; a content filter's code (:func:`~liveroom.async_client.providers.is_content_filter`)
or a ``finish_reason`` saying the reply was filtered makes it start
``content_filter:``.

A reply that carries token ``logprobs`` (the request asked ``--score-probs``)
keeps its scores' probabilities, as direct mode does (:mod:`liveroom.prompts.probs`).

Requests already ok are skipped; duplicate lines, unknown ids and unreadable
lines are counted and shown, never imported twice. A reply whose ``model`` is
neither the run's model nor a dated version of it (``gpt-4o-mini-2024-07-18``
for ``gpt-4o-mini``) is not imported unless that model is accepted
(``--accept-model``); each record keeps the model that answered. The key and
anything shaped like a credential are masked out of replies and errors.

A file counts as imported (by its hash) for the lines taken from it: once
nothing more can come of it, it is skipped; while lines of another model wait
for ``--accept-model``, the next import reads it again and takes those, never a
line taken before; a file nothing was taken from (every line refused,
unreadable or unknown) is read whole again. Each record names the file it came
from (``source``), so the records themselves say which lines a file gave: an
import that dies after writing its records and before saving the state takes
none of them twice when run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import orjson

from ...async_client.errors import GarbledBody, UnusableReply
from ...async_client.files import sha256_file
from ...async_client.manifest import Manifest
from ...async_client.providers import filtered_finish, is_content_filter
from ...async_client.record import ERROR, INVALID, OK, Record, cut
from ...async_client.run_dir import RunDir
from ...async_client.transport import Secrets, error_info, error_text, read_completion, redact, served_as
from ...data.layout import EXPECTED
from ...errors import InputError
from ...prompts.probs import score_probabilities
from ...prompts.stages import STAGES
from .state import SOURCE, BatchState, done_ids, imported_from, invalid_records, load_meta, read_manifest, shard_ids

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
    wrong_model: int = 0  # lines answered by another model, not imported
    taken_before: int = 0  # lines an earlier import took from the same file, skipped
    without_probs: int = 0  # ok replies of a run that asked --score-probs whose probabilities were not found
    files_skipped: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def example(self, kind: str, text: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < SHOWN:
            shown.append(text)

    @property
    def failed(self) -> int:
        """Requests not ok after this import: invalid, error, or answered by another model."""
        return self.invalid + self.error + self.wrong_model

    def lines(self, prog: str = "batch") -> list[str]:
        out = [f"{prog}: imported {self.ok} ok, {self.invalid} invalid, {self.error} error; "
               f"{self.already_ok} already ok, {self.duplicates} duplicate line(s), "
               f"{self.unknown} unknown id(s), {self.malformed} unreadable line(s)"
               + (f", {self.wrong_model} line(s) of another model not imported (pass --accept-model NAME "
                  "to import them)" if self.wrong_model else "")
               + (f", {self.taken_before} line(s) imported before from the same file, skipped"
                  if self.taken_before else "")]
        if self.without_probs:  # once per import: the provider's files carry no token probabilities
            out.append(f"{prog}: {self.without_probs} ok reply(ies) carry no token probabilities (logprobs): "
                       "their records keep the sampled integers only")
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


class WrongModel(Exception):
    """A line answered by a model the run is not for; ``str(err)`` names it."""


@dataclass(frozen=True)
class Expect:
    """What an imported reply must be: the run's model (or one accepted), and the secrets to mask."""

    model: str | None = None
    accept: tuple[str, ...] = ()
    key: Secrets = None

    def check(self, served: str) -> None:
        if (served and self.model and not served_as(served, self.model)
                and not any(served_as(served, a) for a in self.accept)):
            raise WrongModel(served)

    def mask(self, text: str) -> str:
        return redact(text, *((self.key,) if isinstance(self.key, str) or self.key is None else self.key))


def _completed(cid: str, body: Any, meta: dict[str, Any], expect: Expect) -> Record:
    """A 200 line: its completion read as direct mode reads one, its reply checked by the stage's parser."""
    if filtered_finish(reason := _finish_reason(body)):
        return Record(cid, ERROR, meta, error=f"{CONTENT_FILTER}: finish_reason {reason}")
    try:
        reply = read_completion(body)
    except GarbledBody as e:
        return Record(cid, ERROR, meta, error=f"unreadable response body ({e.detail})")
    expect.check(reply.model)
    text, model = expect.mask(reply.text), reply.model or None
    try:
        scores = STAGES[meta["stage"]].parse(text, meta.get("n_items", 0))
    except UnusableReply as e:
        return Record(cid, INVALID, meta, reply=cut(text), usage=reply.usage, error=str(e), model=model)
    if reply.logprobs is not None:  # asked with --score-probs: the probabilities kept as direct mode keeps them
        scores.update(score_probabilities(meta["stage"], text, reply.logprobs, scores, meta.get("n_items", 0)) or {})
    return Record(cid, OK, meta, scores=scores, reply=text, usage=reply.usage, model=model)


def _failure(code: Any, body: Any, err: Any) -> str:
    """What went wrong with a line that has no usable completion, the provider's code in it."""
    if code is not None:
        # vLLM's error lines have a response without a body and the error beside it (its ErrorResponse, or the
        # text of an exception): vllm/entrypoints/openai/run_batch.py, docs/PROVIDERS.md section 4.1
        detail = err if body is None and err else body
        message, provider_code = error_info(detail)
        shown = message if message and provider_code == str(code) else error_text(detail)  # vLLM: code = status
        text = f"HTTP {code}: {shown}"
    elif err:
        text, provider_code = error_text(err), error_info(err)[1]
    else:
        return "the line has neither a response nor an error"
    return f"{CONTENT_FILTER}: {text}" if is_content_filter(provider_code) else text


def line_record(obj: dict[str, Any], meta: dict[str, Any], key: Secrets | Expect) -> Record:
    """The record of one provider output/error line, as direct mode writes it.

    ``key`` is masked out of it (or an :class:`Expect` says what to check and
    mask); :class:`WrongModel` when the reply came from a model not expected.
    """
    expect = key if isinstance(key, Expect) else Expect(key=key)
    cid = obj["custom_id"]
    code, body = _response(obj)
    if code == 200:
        rec = _completed(cid, body, meta, expect)
    else:
        rec = Record(cid, ERROR, meta, error=_failure(code, body, obj.get("error")))
    if rec.error:
        rec.error = expect.mask(rec.error)
    return rec


# ----------------------------------------------------------------- files -> records

@dataclass(frozen=True)
class Line:
    """One reply line of a file that names a request of the run: where it is, its id as the file
    spells it, the line itself (its ``custom_id`` the run's) and the record fields of the request."""

    where: str
    shown: str
    obj: dict[str, Any]
    meta: dict[str, Any]


class Ids(Protocol):
    """How the custom_ids of a file name the run's requests."""

    @property
    def prefix(self) -> str:
        """Put before a file's hash in the state: the same file read under another scheme is another import."""
        ...

    def lines(self, path: Path, report: ImportReport) -> Iterable[Line]:
        """The reply lines of ``path`` that name a request of the run; the others counted in ``report``."""
        ...


def json_lines(path: Path, report: ImportReport) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(line number, object, custom_id) of every line that has a custom_id; the others counted unreadable."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parsed = _custom_id(line)
            if parsed is None:
                report.malformed += 1
                report.example("unreadable lines", f"{path.name} line {n}")
                continue
            yield n, *parsed


@dataclass(frozen=True)
class RunIds:
    """The run's own ids, as prepare wrote them: id -> the record fields of the request."""

    meta: dict[str, dict[str, Any]]
    prefix: str = ""

    def lines(self, path: Path, report: ImportReport) -> Iterator[Line]:
        for n, obj, cid in json_lines(path, report):
            where = f"{path.name} line {n}"
            if cid not in self.meta:
                report.unknown += 1
                report.example("unknown ids", f"{cid!r} ({where})")
                continue
            yield Line(where, cid, obj, self.meta[cid])


def import_files(run_dir: Path, state: BatchState, files: Sequence[Path], key: Secrets,
                 report: ImportReport | None = None, accept: Sequence[str] = (),
                 ids: Ids | None = None) -> ImportReport:
    """Import provider files into the run directory; the caller saves ``state``.

    ``key`` is masked out of what is written; replies of a model other than the
    run's (or one in ``accept``) are counted, not imported. ``ids`` says how the
    files name the run's requests (default: by the run's own ids). What each file
    gave is remembered in ``state`` (:meth:`~.state.BatchState.took`): a file is
    skipped once nothing more can come of it; a line taken once (its record names
    the file) is never taken again from the same file.
    """
    run_dir = Path(run_dir)
    report = report or ImportReport()
    manifest = read_manifest(run_dir)
    expect = Expect(manifest.model, tuple(accept), key)
    scheme = ids or RunIds(load_meta(run_dir, state))
    chosen: dict[str, Record] = {}  # parsed first: one record per id, ok preferred
    read: dict[str, tuple[str, set[str], bool]] = {}  # file key -> name, ids read, a line of another model
    recorded: dict[str, set[str]] | None = None  # file key -> ids of its records: read once, if needed
    for path in map(Path, files):
        file_key = scheme.prefix + _digest(path)
        if file_key in state.imported or file_key in read:
            report.files_skipped.append(path.name)
            continue
        if recorded is None:
            recorded = imported_from(run_dir, manifest.groups)
        refused = report.wrong_model
        got = _read_file(path, file_key, scheme, expect, recorded.get(file_key, set()), chosen, report)
        read[file_key] = (path.name, got, report.wrong_model > refused)
    _write_records(run_dir, manifest, chosen, report)
    for file_key, (name, got, other_model) in read.items():
        taken = bool(got & report.seen) or bool(recorded and recorded.get(file_key))
        state.took(file_key, name, taken, complete=not other_model)
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


def _read_file(path: Path, file_key: str, ids: Ids, expect: Expect, taken: set[str], chosen: dict[str, Record],
               report: ImportReport) -> set[str]:
    """Every line of one file into ``chosen`` but those of ``taken`` (taken from it before), each record
    naming ``file_key`` as its source; the ids read."""
    got: set[str] = set()
    for line in ids.lines(path, report):
        cid = line.obj["custom_id"]
        if cid in taken:  # accounted for by that import
            report.taken_before += 1
            report.seen.add(cid)
            continue
        try:
            rec = line_record(line.obj, line.meta, expect)
        except WrongModel as e:
            report.wrong_model += 1
            report.example("other model", f"{line.shown}: {e} ({line.where}; the run is for {expect.model})")
            continue
        rec.meta = {SOURCE: file_key, **rec.meta}  # imported_from finds it
        got.add(cid)
        _choose(chosen, rec, report, line.where)
    return got


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


def _write_records(run_dir: Path, manifest: Manifest, chosen: dict[str, Record],
                   report: ImportReport) -> None:
    """Append the chosen records of requests not already ok, counting each (and its re-asks)."""
    groups = manifest.groups
    asked = "top_logprobs" in manifest.params  # made with --score-probs
    tried = {cid: len(recs) for cid, recs in invalid_records(run_dir, groups).items()} if chosen else {}
    records = RunDir(run_dir)
    records.open(manifest)
    try:
        done = {g: records.done(g) for g in groups}
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
            records.write(stage, rec)
            _count(report, cid, rec)
            if rec.ok:
                done[stage].add(cid)
                report.without_probs += asked and not any(k.endswith(EXPECTED) for k in rec.scores)
    finally:
        records.close()


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
