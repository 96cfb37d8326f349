"""The run manifest: what the records of a run directory mean, typed, with its one JSON form.

``manifest.json`` fixes the model, the endpoint (none for a run over declared endpoints:
it resumes on any set of them, and a run made with one endpoint resumes on a set), the parameters, the prompt
set, the groups (stage -> version), the persona set and the input hashes; a
run whose manifest differs is refused with the differences named, never
silently mixed. :meth:`Manifest.from_json` reads every manifest written so far
(a key it does not know is kept as it is, one that older versions did not
write reads as its default) and :meth:`Manifest.to_json` writes the keys in
the order they have always had, so an unchanged manifest reads back equal and
is not written again. Only :class:`~.run_dir.RunDir` reads or writes the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from ..errors import LiveroomError

FORMAT = 1


class ManifestMismatch(LiveroomError):
    """The run directory was made by another command (other model, prompts, inputs...)."""


#: the parts a run may grow: stages and input files not seen yet are added, those seen must be the same
EXTENDABLE = ("groups", "inputs")


@dataclass
class Manifest:
    """What a run's records mean. ``prompts`` is None for runs made before there were prompt sets."""

    model: str | None = None
    endpoint: str | None = None                                 # host[:port][/path] of the base URL
    params: dict[str, Any] = field(default_factory=dict)        # what is sent with every request
    groups: dict[str, str] = field(default_factory=dict)        # record file (stage) -> its version
    personas: list[dict[str, Any]] = field(default_factory=list)  # the persona set as plain data
    inputs: dict[str, str] = field(default_factory=dict)        # input name -> its sha256
    prompts: str | None = None                                  # the prompt set, when named
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)         # keys this version does not know

    @property
    def persona_keys(self) -> list[str]:
        return [str(p["key"]) for p in self.personas]

    def to_json(self) -> dict[str, Any]:
        """The manifest as the file holds it, keys in their order (``prompts`` only when named)."""
        return {"format": self.format, "model": self.model, "endpoint": self.endpoint, "params": self.params,
                **({"prompts": self.prompts} if self.prompts is not None else {}),
                "groups": self.groups, "personas": self.personas, "inputs": self.inputs, **self.extra}

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        """A manifest from its JSON; ValueError naming the key at fault."""
        if isinstance(obj, Manifest):
            return obj
        if not isinstance(obj, Mapping):
            raise ValueError("not a JSON object")
        kinds: dict[str, type | tuple[type, ...]] = {
            "model": (str, type(None)), "endpoint": (str, type(None)), "params": dict, "groups": dict,
            "personas": list, "inputs": dict, "prompts": (str, type(None)), "format": int}
        known = {f.name for f in fields(cls)} - {"extra"}
        for key, kind in kinds.items():
            if key in obj and not isinstance(obj[key], kind):
                raise ValueError(f"{key!r} is a {type(obj[key]).__name__}")
        if not all(isinstance(p, dict) and "key" in p for p in obj.get("personas", ())):
            raise ValueError("a persona without a 'key'")
        return cls(**{k: v for k, v in obj.items() if k in known},
                   extra={k: v for k, v in obj.items() if k not in known})

    @classmethod
    def loads(cls, data: bytes) -> Manifest:
        """A manifest from the file's bytes; ValueError (orjson's JSONDecodeError is one) when unreadable."""
        return cls.from_json(orjson.loads(data))

    def extended_by(self, new: Manifest, where: str) -> Manifest:
        """``new`` with what this (recorded) manifest holds of the extendable parts; :class:`ManifestMismatch`
        naming every difference when they disagree."""
        if new.endpoint is None or self.endpoint is None:  # declared endpoints: any set, the run's own kept
            new = Manifest.from_json({**new.to_json(), "endpoint": self.endpoint})
        old_json, new_json = self.to_json(), new.to_json()

        def common(m: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
            return {**m, **{k: {n: v for n, v in m.get(k, {}).items() if n in other.get(k, {})} for k in EXTENDABLE}}

        diffs = _differences(common(old_json, new_json), common(new_json, old_json))
        if diffs:
            raise ManifestMismatch(f"{where} was made by a different command; differences: " + "; ".join(diffs)
                                   + " (use another --run, or the original settings)")
        return Manifest.from_json({**new_json, **{k: {**old_json.get(k, {}), **new_json.get(k, {})}
                                                  for k in EXTENDABLE}})


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{where}.{k}" if where else k)
        return out
    if old == new:
        return []
    show: Callable[[Any], str] = lambda v: orjson.dumps(v).decode()[:60]  # noqa: E731
    return [f"{where}: run has {show(old)}, command gives {show(new)}"]
