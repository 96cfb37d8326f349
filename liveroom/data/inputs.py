"""Loading and validating the two input files: pitches CSV and showcase JSON.

Every problem is an :class:`InputError` of one line that names the file, the
1-based line of the CSV record and the column, e.g.
``pitches.csv line 5: start '2024-13-45 99:99' is not YYYY-MM-DD HH:MM``.

A record with more or fewer fields than the header (an unquoted comma) is
refused, naming its line; a file that is not in the expected encoding (UTF-8,
with or without a BOM, unless ``encoding`` says otherwise) is refused naming
the line, with a hint when it looks like GB18030/GBK. Lengths shown to the
model are cut and numbers kept to their ranges by the rules of
:mod:`liveroom.data.pitch`, which the forecast API applies too.
"""

from __future__ import annotations

import codecs
import csv
import gc
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import orjson
import pandas as pd

from ..errors import InputError
from .layout import TEXT_COLUMNS, TIME_COLUMNS
from .moment import CalendarYearError, time_features
from .pitch import (
    MAX_ITEM_NAME,
    MAX_SHOWCASE_ITEMS,
    START_FORMAT,
    START_PATTERN,
    TEXT_LIMITS,
    Item,
    cut,
    keep_items,
    out_of_range,
    range_message,
)

__all__ = ["DEFAULT_ENCODING", "ENCODING_HELP", "MAX_ITEM_NAME", "MAX_SHOWCASE_ITEMS", "Item", "check_encoding",
           "check_showcase", "load_pitches", "load_showcase"]

DEFAULT_ENCODING = "utf-8-sig"  # UTF-8, a byte-order mark allowed
#: the help of every command's ``--encoding``, whose value goes through :func:`check_encoding`
ENCODING_HELP = "text encoding of the pitches CSV, e.g. gb18030 (default: UTF-8, with or without BOM)"


# --------------------------------------------------------------------------- pitches

def check_encoding(name: str | None) -> str:
    """The codec to read with (UTF-8 allows a BOM); an InputError for a name Python does not know."""
    if name is None:
        return DEFAULT_ENCODING
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise InputError(f"--encoding: unknown encoding {name!r} (e.g. utf-8, gb18030)") from None
    return DEFAULT_ENCODING if codec == "utf-8" else name


def _not_decodable(path: Path, encoding: str) -> InputError:
    """The line that is not in ``encoding``, and a hint at what the file is."""
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as e:
                bad = line[e.start:e.start + 1].hex()
                break
        else:
            return InputError(f"{path.name}: cannot be read as {encoding}")
    shown = "UTF-8" if encoding == DEFAULT_ENCODING else encoding
    try:
        line.decode("gb18030")
        hint = f"looks like GB18030/GBK: pass --encoding gb18030 or convert with iconv -f gb18030 -t utf-8 {path.name}"
    except UnicodeDecodeError:
        hint = "pass --encoding with the file's encoding, or convert it to UTF-8 with iconv"
    return InputError(f"{path.name} line {n}: not {shown} (byte 0x{bad}); {hint}")


def _check_fields(path: Path, encoding: str) -> None:
    """Every record has as many fields as the header, and the file decodes; else one line naming the record."""
    try:
        with path.open(newline="", encoding=encoding) as f:
            reader = csv.reader(f)
            width = len(next(reader, ()))
            start = reader.line_num + 1
            for row in reader:
                if row and len(row) != width:
                    raise InputError(
                        f"{path.name} line {start}: {len(row)} fields, the header has {width}"
                        + (" (an unquoted comma? quote fields that hold commas)" if len(row) > width else ""))
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise _not_decodable(path, encoding) from None
    except csv.Error as e:
        raise InputError(f"{path.name} line {start}: cannot read as CSV: {e}") from None


def _record_line(path: Path, row: int, encoding: str = DEFAULT_ENCODING) -> int:
    """1-based physical line where data record ``row`` (0-based) starts.

    Only called on error, so the common path never re-reads the file; it is
    exact also when quoted transcripts hold newlines.
    """
    with path.open(newline="", encoding=encoding) as f:
        reader = csv.reader(f)
        next(reader, None)
        start = reader.line_num + 1
        for i, _ in enumerate(reader):
            if i == row:
                return start
            start = reader.line_num + 1
    return start


def _fail(path: Path, row: int, column: str, msg: str, encoding: str = DEFAULT_ENCODING) -> InputError:
    return InputError(f"{path.name} line {_record_line(path, row, encoding)}: {column} {msg}")


_INT64 = (-(2**63), 2**63 - 1)


def _as_int(cell: str) -> int | None:
    """The integer in a CSV cell ("7", "7.0", "7e0"), or None when it holds none."""
    s = cell.strip()
    try:
        value = int(s)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            return None
        if not math.isfinite(f) or f != int(f) or abs(f) > 2**53:  # beyond 2**53 a float is not exact
            return None
        value = int(f)
    return value if _INT64[0] <= value <= _INT64[1] else None


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


def load_pitches(
    path: str | Path,
    need: Iterable[str] = TEXT_COLUMNS,
    numeric: Iterable[str] = (),
    encoding: str | None = None,
) -> pd.DataFrame:
    """Read a pitches CSV in the reference format.

    ``need`` are columns that must be present (``index`` and ``start`` always
    are); ``numeric`` must be present (time features excepted, see below) and
    hold finite numbers. ``index`` must be unique integers; ``start`` must be
    ``YYYY-MM-DD HH:MM``; empty text cells are kept as ``""``.

    Time features (``dow_*``, ``hour_*``, ``is_workday``, ``is_holiday``) that
    the file lacks are computed from ``start`` by the official Chinese calendar.
    Rows keep the file's order. ``encoding`` (default UTF-8) is the file's
    text encoding. ``title``, ``prod`` and ``text`` are cut, and ``duration``
    and ``user_cnt`` must lie in their ranges, by the rules of :mod:`liveroom.data.pitch`.
    """
    path = Path(path)
    numeric = tuple(numeric)
    wanted = {"index", "start", *need, *numeric}
    enc = check_encoding(encoding)
    try:
        _check_fields(path, enc)
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=enc, index_col=False,
                         usecols=lambda c: c in wanted)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{path.name}: cannot read as CSV: {str(e).strip().splitlines()[-1]}") from None

    required = dict.fromkeys(("index", "start", *need, *(c for c in numeric if c not in TIME_COLUMNS)))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path.name}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise InputError(f"{path.name}: no pitches (header only)")

    ints = [_as_int(v) for v in df["index"]]
    bad = _first_bad(np.array([v is None for v in ints]))
    if bad is not None:
        raise _fail(path, bad, "index", f"{df['index'].iat[bad]!r} is not an integer", enc)
    idx = pd.Series(ints, index=df.index, dtype=np.int64)
    dup = _first_bad(idx.duplicated().to_numpy())
    if dup is not None:
        first = int(np.flatnonzero((idx == idx.iat[dup]).to_numpy())[0])
        raise _fail(path, dup, "index", f"{idx.iat[dup]} repeats line {_record_line(path, first, enc)}", enc)
    df["index"] = idx

    start = pd.to_datetime(df["start"], format=START_FORMAT, errors="coerce")
    # strptime also takes "2024-1-5 6:05", which would then miss its showcase key
    bad = _first_bad((start.isna() | ~df["start"].str.fullmatch(START_PATTERN)).to_numpy())
    if bad is not None:
        raise _fail(path, bad, "start", f"{df['start'].iat[bad]!r} is not YYYY-MM-DD HH:MM", enc)

    for col in numeric:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col].str.strip(), errors="coerce")
        bad = _first_bad(~np.isfinite(values.to_numpy(dtype=float)))
        if bad is not None:
            raise _fail(path, bad, col, f"{df[col].iat[bad]!r} is not a finite number", enc)
        bad = _first_bad(out_of_range(col, values.to_numpy(dtype=float)))
        if bad is not None:
            raise _fail(path, bad, col, f"{df[col].iat[bad]!r} {range_message(col)}", enc)
        df[col] = values.astype(np.float64)

    for col in TEXT_LIMITS:
        if col in df.columns:
            df[col] = df[col].map(lambda v, c=col: cut(c, v))

    lacking = [c for c in TIME_COLUMNS if c not in df.columns]
    if lacking:
        try:
            feats = time_features(start)
        except CalendarYearError as e:  # name the first row of the uncovered year
            row = int(np.flatnonzero((start.dt.year == e.year).to_numpy())[0])
            raise _fail(path, row, "start", f"{df['start'].iat[row]!r}: {e}", enc) from None
        for c in lacking:
            df[c] = feats[c]
    return df


# --------------------------------------------------------------------------- showcase

def _read_json_exactly(path: Path, raw: bytes) -> object:
    """The stdlib parser, for what the fast one refuses: its errors name the
    line, and it reads NaN and Infinity, which are then named as bad items."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path.name}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path.name} line {e.lineno}: not valid JSON ({e.msg})") from None


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a big input is built: it makes none
    and would rescan the growing heap again and again (2-3x the load time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_showcase(path: str | Path) -> dict[str, list[Item]]:
    """Read the showcase JSON: ``start`` -> list of ``[idx, name, price]``.

    Items with price <= 0 are dropped and at most the first 10 of the rest kept;
    the first kept item is the one being promoted. A name is cut to
    :data:`MAX_ITEM_NAME` characters (:func:`liveroom.data.pitch.keep_items`).
    """
    path = Path(path)
    try:
        raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path.name}: cannot read: {e}") from None
    with _gc_paused():
        return _showcase(path, raw)


def _showcase(path: Path, raw: bytes) -> dict[str, list[Item]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = _read_json_exactly(path, raw)
    if not isinstance(data, dict):
        raise InputError(f"{path.name}: expected a JSON object mapping start time to a list of items")
    showcase: dict[str, list[Item]] = {}
    for start, items in data.items():
        try:
            kept = keep_items(items)
        except ValueError as e:
            raise InputError(f"{path.name}: {start!r}: {e}") from None
        showcase[start] = kept
    return showcase


def check_showcase(pitches: pd.DataFrame, showcase: Mapping[str, list[Item]], name: str = "showcase") -> None:
    """Fail, listing the pitches, when any pitch has no showcase item to show."""
    lacking = [(i, s) for i, s in zip(pitches["index"], pitches["start"]) if not showcase.get(s)]
    if lacking:
        shown = ", ".join(f"index {i} ({s})" for i, s in lacking[:5])
        more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
        raise InputError(f"{name}: no showcase items (with price > 0) for {len(lacking)} pitch(es): {shown}{more}")
