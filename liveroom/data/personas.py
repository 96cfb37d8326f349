"""The audience personas the model role-plays, as data.

The eight defaults are the reference's segments, in the fixed order that every
feature matrix and target column follows, worded as the method words them;
:data:`LEGACY_PERSONAS` are the same segments in the first prompt set's words.
A user may score other segments by loading a JSON file: a list of objects
with the fields of :class:`Persona`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Persona:
    key: str          # ascii identifier used in ids and column names, e.g. "town_old"
    name: str         # Chinese segment name shown to the model, e.g. "小镇中老年"
    age: str          # age band, e.g. "35岁以上"
    city: str         # city tier, e.g. "四线及以下城市"
    consumption: str  # consumption level, e.g. "低"
    traits: str = ""  # other traits, e.g. "女性，已婚已育"; may be empty


#: worded as the method's table: city_blue "mid-low, or not noticeably rising", the towns "lower"
DEFAULT_PERSONAS: tuple[Persona, ...] = (
    Persona("Z", "Z世代", "18至24岁", "一至三线城市", "中低"),
    Persona("exquisite_mother", "精致妈妈", "25至35岁", "一至三线城市", "中高及以上", "女性，已婚已育"),
    Persona("new_white", "新锐白领", "25至35岁", "一至三线城市", "中高", "未婚或未育"),
    Persona("deep_middle", "资深中产", "36至50岁", "一至三线城市", "中高"),
    Persona("city_blue", "都市蓝领", "25至35岁", "一至三线城市", "中低，或没有明显上升"),
    Persona("city_old", "都市银发", "50岁以上", "一至三线城市", "中等"),
    Persona("town_youth", "小镇青年", "18至35岁", "四线及以下城市", "较低"),
    Persona("town_old", "小镇中老年", "35岁以上", "四线及以下城市", "较低"),
)

#: the same segments as the first prompt set ("legacy") words them, so its runs resume unchanged
_LEGACY_CONSUMPTION = {"city_blue": "中低，且没有上升趋势", "town_youth": "低", "town_old": "低"}
LEGACY_PERSONAS: tuple[Persona, ...] = tuple(
    replace(p, consumption=_LEGACY_CONSUMPTION.get(p.key, p.consumption)) for p in DEFAULT_PERSONAS
)

PERSONA_KEYS: tuple[str, ...] = tuple(p.key for p in DEFAULT_PERSONAS)

_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FIELDS = ("key", "name", "age", "city", "consumption")


def load_personas(path: str | Path) -> tuple[Persona, ...]:
    """Read a persona set from JSON, validating every record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty JSON list of persona objects")
    personas, seen = [], set()
    for i, rec in enumerate(data, 1):
        where = f"{path} persona {i}"
        if not isinstance(rec, dict):
            raise InputError(f"{where}: expected an object")
        missing = [f for f in _FIELDS if not isinstance(rec.get(f), str) or not rec[f].strip()]
        if missing:
            raise InputError(f"{where}: missing or empty field(s) {', '.join(missing)}")
        unknown = set(rec) - set(_FIELDS) - {"traits"}
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if not isinstance(rec.get("traits", ""), str):
            raise InputError(f"{where}: field traits must be text")
        if not _KEY.match(rec["key"]):
            raise InputError(f"{where}: key {rec['key']!r} must be letters, digits and _")
        if rec["key"] in seen:
            raise InputError(f"{where}: duplicate key {rec['key']!r}")
        seen.add(rec["key"])
        personas.append(Persona(**{k: rec.get(k, "") for k in (*_FIELDS, "traits")}))
    return tuple(personas)


def personas_json(personas: tuple[Persona, ...]) -> list[dict]:
    """The persona set as plain data (for manifests and persona files)."""
    return [asdict(p) for p in personas]
