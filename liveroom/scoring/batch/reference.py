"""``bin/batch import --id-scheme reference``: the reference's own output files into a run.

The reference names a request ``s{stage}_v{version}_i{row}_c{persona}``: the
stage (entry, buy, read), its prompt version, the 0-based row of the pitches
file and the persona's number in the fixed persona order; it writes one file
per stage, and its buy replies are a bare JSON list (scored under
``want_to_buy``, or ``want``), which the buy parser reads as it is.

Rows become pitch indexes through the run's pitches file (``--pitches``, which
must be the file the manifest hashed) and persona numbers become keys through
the run's persona order; buy needs ``--goods`` for each pitch's item count.
Each line then becomes the record direct mode would write, under this run's
id (the reference's id kept as ``reference_id``), checked (the run's model,
``--accept-model``), chosen and appended by the importer as for the run's own
files. A file with a row past the pitches file was made for another one: it
is refused and nothing is imported.

The run directory comes first, from ``bin/batch prepare`` with the same
pitches and showcase files and the model the files were asked of (its
request files need not be sent); ``bin/collect`` then reads the run as any.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...async_client.files import sha256_file
from ...async_client.manifest import Manifest
from ...data.inputs import load_pitches, load_showcase
from ...errors import InputError
from ...prompts.stages import STAGES, request_id
from .importer import ImportReport, Line, json_lines

REFERENCE_ID = re.compile(r"s(?P<stage>[A-Za-z]+)_v(?P<version>.+)_i(?P<row>[0-9]+)_c(?P<persona>[0-9]+)")


def reference_id(custom_id: str) -> tuple[str, int, int] | None:
    """(stage, row, persona number) of an id in the reference's scheme, else None."""
    m = REFERENCE_ID.fullmatch(custom_id)
    return (m["stage"], int(m["row"]), int(m["persona"])) if m else None


@dataclass(frozen=True)
class RunRows:
    """What turns the reference's numbers into this run's: the pitch index of each
    row, the persona key of each number, the item count of each row (buy)."""

    pitches: Path
    index: list[int]
    personas: list[str]
    n_items: list[int] | None  # None without --goods

    def meta(self, stage: str, row: int, persona: int) -> dict[str, Any] | str:
        """The record fields of one request, or why there are none."""
        if stage not in STAGES:
            return f"no stage {stage!r}"
        if persona >= len(self.personas):
            return f"no persona number {persona} in the run's {len(self.personas)}"
        meta: dict[str, Any] = {"stage": stage, "index": self.index[row], "persona": self.personas[persona]}
        if STAGES[stage].needs_showcase:
            if self.n_items is None:
                raise InputError(f"{stage} lines need --goods, the run's showcase file (each pitch's item count)")
            if not self.n_items[row]:
                return f"pitch {self.index[row]} has no showcase items in --goods"
            meta["n_items"] = self.n_items[row]
        return meta


def _same_input(path: Path, manifest: Manifest, name: str, flag: str) -> None:
    want = manifest.inputs.get(name)
    try:
        got = sha256_file(path)
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot read ({e.strerror or e})") from None
    if want is not None and got != want:
        raise InputError(f"{flag} {path} is not the {name} file of the run (its sha256 differs from the manifest's); "
                         "rows would be read as other pitches")


def run_rows(manifest: Manifest, pitches: Path, goods: Path | None, encoding: str | None = None) -> RunRows:
    """The run's rows, personas and item counts, the files checked against the manifest (the pitches
    file read in ``encoding``, default UTF-8)."""
    _same_input(pitches, manifest, "pitches", "--pitches")
    df = load_pitches(pitches, encoding=encoding)
    n_items = None
    if goods is not None:
        _same_input(goods, manifest, "goods", "--goods")
        showcase = load_showcase(goods)
        n_items = [len(showcase.get(s, ())) for s in df["start"]]
    return RunRows(pitches, [int(i) for i in df["index"]], manifest.persona_keys, n_items)


@dataclass(frozen=True)
class ReferenceIds:
    """The reference's ids, read as the run's (an :class:`~.importer.Ids`)."""

    rows: RunRows
    prefix: str = "reference:"  # a plain import of the same file (all ids unknown) is not this one

    def lines(self, path: Path, report: ImportReport) -> list[Line]:
        """Every reply line of ``path`` under the run's id; the file refused whole when a row is past
        the pitches file's."""
        found = []
        for n, obj, cid in json_lines(path, report):
            ref = reference_id(cid)
            if ref is None:
                report.unknown += 1
                report.example("unknown ids", f"{cid!r} ({path.name} line {n}: not s{{stage}}_v{{version}}_i{{row}}_c{{persona}})")
            elif "body" in obj and "response" not in obj and "error" not in obj:
                report.malformed += 1
                report.example("request lines, not replies", f"{path.name} line {n}")
            else:
                found.append((n, obj, ref))
        last, rows = max((ref[1] for _, _, ref in found), default=-1), self.rows
        if last >= len(rows.index):
            raise InputError(f"{path.name}: row {last} is past the last row of {rows.pitches.name} ({len(rows.index)} "
                             f"pitches, rows 0-{len(rows.index) - 1}): the file was made for another pitches file; "
                             "nothing imported")
        out = []
        for n, obj, (stage, row, persona) in found:
            meta = rows.meta(stage, row, persona)
            if isinstance(meta, str):
                report.unknown += 1
                report.example("unknown ids", f"{obj['custom_id']!r} ({path.name} line {n}: {meta})")
                continue
            ours = {**obj, "custom_id": request_id(stage, meta["index"], meta["persona"])}
            out.append(Line(f"{path.name} line {n}", obj["custom_id"], ours,
                            {**meta, "reference_id": obj["custom_id"]}))
        return out


def reference_scheme(pitches: Path | None, goods: Path | None,
                     encoding: str | None = None) -> Callable[[Manifest], ReferenceIds]:
    """``--id-scheme reference`` for :func:`~.flows.import_by_hand`: the flags checked now, the files
    against the run's manifest when it is called."""
    if pitches is None:
        raise InputError("--id-scheme reference needs --pitches CSV: the run's pitches file, whose 0-based rows "
                         "the ids number")
    pitches_path, goods_path = Path(pitches), Path(goods) if goods is not None else None
    return lambda manifest: ReferenceIds(run_rows(manifest, pitches_path, goods_path, encoding))


def reference_hint(report: ImportReport) -> str | None:
    """A line naming the flag, when the unknown ids of a plain import are in the reference's scheme."""
    shown = report.examples.get("unknown ids", [])
    if any(REFERENCE_ID.search(text) for text in shown):
        return ("the unknown ids look like the reference's (s{stage}_v{version}_i{row}_c{persona}): "
                "import them with --id-scheme reference --pitches CSV --goods JSON")
    return None
