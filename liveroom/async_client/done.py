"""Which requests of a run are done: one byte per (stage, pitch, persona).

A set of request ids costs about 100 bytes an id, so resuming a run of 1M
requests would hold 100 MB of strings and walk every id in Python; this
table holds 1 MB and answers "which pitches still have work" with one numpy
reduction. Ids are ``stage:index:persona`` (:func:`liveroom.stages.request_id`).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from ..stages import request_id

_INDEX = re.compile(rb"-?[0-9]{1,18}")


class _Numbers(dict):
    """Persona key (bytes) -> its number; -1 for a key not planned."""

    def __missing__(self, key: bytes) -> int:
        return -1


def _split(stage: bytes, ids: list[bytes], personas: _Numbers) -> tuple[np.ndarray, np.ndarray]:
    """Pitch index and persona number of each ``stage:index:persona`` id of
    ``stage``; ids of another shape or stage are left out."""
    parts = b":".join(ids).split(b":")  # stage, index, persona, stage, index, ...
    if len(parts) == 3 * len(ids) and parts[0::3].count(stage) == len(ids):  # the usual case
        try:
            index = np.fromiter(map(int, parts[1::3]), np.int64, len(ids))
        except (ValueError, OverflowError):
            pass
        else:
            return index, np.fromiter(map(personas.__getitem__, parts[2::3]), np.int64, len(ids))
    good = [t for t in (i.split(b":") for i in ids) if len(t) == 3 and t[0] == stage and _INDEX.fullmatch(t[1])]
    return (np.array([int(t[1]) for t in good], dtype=np.int64),
            np.array([personas[t[2]] for t in good], dtype=np.int64))


class DoneTable:
    """Done flags for the planned requests: ``stages`` x pitch ``indices`` x ``personas``."""

    def __init__(self, indices: Sequence[int], stages: Sequence[str], personas: Sequence[str]):
        self._indices = indices = np.asarray(indices, dtype=np.int64)
        self._order = np.argsort(indices, kind="stable")
        self._sorted = indices[self._order]
        self._stage = {s: i for i, s in enumerate(stages)}
        self._persona = {p: i for i, p in enumerate(personas)}
        self._numbers = _Numbers((p.encode(), i) for p, i in self._persona.items())
        self.flags = np.zeros((len(stages), len(indices), len(personas)), dtype=bool)

    def _rows(self, index: np.ndarray) -> np.ndarray:
        """Row in file order of each pitch index; -1 where the index is not planned."""
        if not len(self._sorted):
            return np.full(len(index), -1)
        pos = np.searchsorted(self._sorted, index).clip(max=len(self._sorted) - 1)
        return np.where(self._sorted[pos] == index, self._order[pos], -1)

    def add(self, stage: str, ids: Iterable[bytes]) -> None:
        """Mark ``ids`` of ``stage`` done; ids outside the plan are ignored."""
        ids = list(ids)
        s = self._stage.get(stage)
        if s is None or not ids:
            return
        index, persona = _split(stage.encode(), ids, self._numbers)
        rows = self._rows(index)
        ok = (rows >= 0) & (persona >= 0)
        self.flags[s, rows[ok], persona[ok]] = True

    def count(self) -> int:
        return int(self.flags.sum())

    def pending_rows(self) -> np.ndarray:
        """Boolean per pitch row: some request of it is not done."""
        return ~self.flags.all(axis=(0, 2))

    def done_ids(self, row: int) -> dict[str, set[str]]:
        """The done request ids of the pitch in ``row``, by stage (usually none)."""
        flags = self.flags[:, row]
        if not flags.any():
            return {}
        index = int(self._indices[row])
        personas = list(self._persona)
        return {stage: {request_id(stage, index, personas[k]) for k in np.flatnonzero(flags[s])}
                for stage, s in self._stage.items()}
