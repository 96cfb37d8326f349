"""The plan of a run: inputs -> validated plan -> the jobs still to do.

Everything here is decided before a request is sent: the prompt set, the
stages, personas and model parameters, the run manifest, and which (stage, pitch, persona)
questions the run directory already holds (a done table of one byte per
question: a set of 1M request ids would cost 100 MB of strings). The
run directory hands over the raw ids of its ok records; reading them as
``stage:index:persona`` (:func:`~liveroom.prompts.stages.request_id`) is done
here, so the engine never parses an id. A question the provider's content
filter refused (an error record whose reason starts ``content_filter:``) is
done too: asking again gets the same refusal; ``Plan.retry_filtered``
(``--retry-filtered``) asks it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..async_client.engine import Job
from ..async_client.errors import CONTENT_FILTER
from ..async_client.files import sha256_file
from ..async_client.manifest import Manifest, ManifestMismatch
from ..async_client.run_dir import RunDir
from ..async_client.transport import endpoint_host
from ..data.inputs import check_showcase, load_pitches, load_showcase
from ..data.personas import Persona, load_personas, personas_json
from ..errors import InputError
from ..prompts.probs import score_probabilities
from ..prompts.stages import PROMPT_SETS, STAGES, Stage, iter_pitches, iter_requests, reask_messages, request_id
from ..prompts.wording import DEFAULT_PROMPTS, UNNAMED_PROMPTS, WORDINGS

DEFAULT_MODEL = "gpt-4o-mini"
RESPONSE_FORMATS = ("json_object", "json_schema", "none")


@dataclass(frozen=True)
class ModelParams:
    """What is sent with every question besides the messages."""

    model: str = DEFAULT_MODEL
    temperature: float = 0.2
    max_tokens: int = 1000
    response_format: str = "json_object"
    #: provider fields merged into every body (``--extra-body``), e.g. ``{"enable_thinking": false}``
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    #: ``--score-probs``: ask ``logprobs: true, top_logprobs: K`` so each score keeps its probabilities
    #: (:mod:`liveroom.prompts.probs`); None: not asked (the method)
    top_logprobs: int | None = None

    def payload(self, messages: list[dict[str, str]], stage: str, schema: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions body of one question."""
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif self.response_format == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": f"{stage}_reply", "strict": True, "schema": schema}}
        if self.top_logprobs is not None:
            body["logprobs"], body["top_logprobs"] = True, self.top_logprobs
        if self.extra_body:
            body.update(self.extra_body)
        return body

    def manifest(self) -> dict[str, Any]:
        """The parameters as the run manifest keeps them (``extra_body`` and ``top_logprobs`` only when
        set, so the manifests of runs made before them stay valid; a run resumed without the probabilities
        it was made with, or with them when it was made without, is refused)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens,
                "response_format": self.response_format,
                **({"extra_body": dict(self.extra_body)} if self.extra_body else {}),
                **({"top_logprobs": self.top_logprobs} if self.top_logprobs is not None else {})}


def extra_body(text: str | None) -> dict[str, Any]:
    """``--extra-body``: a JSON object of fields to merge into every request body."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise InputError(f"--extra-body must be a JSON object such as '{{\"enable_thinking\": false}}': {e}") from None
    if not isinstance(value, dict):
        raise InputError(f"--extra-body must be a JSON object, got {type(value).__name__}")
    if "messages" in value:
        raise InputError("--extra-body cannot set 'messages' (the questions are the run's)")
    return value


class StageTask:
    """Validation and re-asking of replies, by stage (the engine's task)."""

    def validate(self, job: Job, text: str) -> dict[str, Any]:
        """The stage's scores; its parser raises ReplyError, an UnusableReply, when it cannot."""
        return STAGES[job.meta["stage"]].parse(text, job.meta.get("n_items", 0))

    def probabilities(self, job: Job, text: str, logprobs: Any, scores: dict[str, Any]) -> bool:
        """Add the scores' probabilities (:func:`~liveroom.prompts.probs.score_probabilities`) to ``scores``
        from the reply's ``logprobs``; False, ``scores`` unchanged, when they cannot be read."""
        extra = score_probabilities(job.meta["stage"], text, logprobs, scores, job.meta.get("n_items", 0))
        if extra is None:
            return False
        scores.update(extra)
        return True

    def reask(self, job: Job, payload: dict[str, Any], text: str, reason: str) -> dict[str, Any]:
        """The same question, the bad reply and the reason appended."""
        return {**payload, "messages": reask_messages(payload["messages"], text, reason)}


def estimate_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """Tokens a question may use at most, for the tokens-per-minute limit."""
    # CJK text runs about one token per character; this errs high for ASCII
    return sum(len(m["content"]) for m in messages) + max_tokens


def prompt_estimate(job: Job) -> int:
    """The token limiter's estimate of a job's prompt: :func:`estimate_tokens` of the messages it sends
    (for a first ask, ``job.tokens`` less ``max_tokens``)."""
    return estimate_tokens(job.payload["messages"], 0)


@dataclass
class Plan:
    """Everything validated, before any request is sent."""

    pitches: Any
    showcase: dict[str, Any] | None
    stages: tuple[Stage, ...]
    personas: tuple[Persona, ...]
    params: ModelParams
    manifest: Manifest
    retry_filtered: bool = False  # ask again what a content filter refused (else it counts as done)


def parse_stages(text: str, prompts: str = DEFAULT_PROMPTS) -> tuple[Stage, ...]:
    """The stages ``--stages`` names, in its order, each once, as prompt set ``prompts`` asks them."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise InputError(f"--stages: unknown stage(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STAGES)}")
    return tuple(PROMPT_SETS[prompts][n] for n in dict.fromkeys(names))


def recorded_prompts(run_dir: str | Path) -> str | None:
    """The prompt set a run directory was made with; None when it has no readable manifest yet.

    A manifest without a ``prompts`` entry was made before there were sets, so
    with :data:`~liveroom.prompts.wording.UNNAMED_PROMPTS`.
    """
    try:
        manifest = RunDir(run_dir).recorded()
    except ManifestMismatch:
        return None  # an unreadable manifest is refused by the manifest check
    return None if manifest is None else manifest.prompts or UNNAMED_PROMPTS


def choose_prompts(name: str | None, run_dir: str | Path | None = None) -> str:
    """``--prompts``, else the set the run directory was made with, else the default set.

    So an existing run resumes with the same command, whatever the default is now.
    """
    if name is not None:
        if name not in PROMPT_SETS:
            raise InputError(f"--prompts: unknown prompt set {name!r}; choose from {', '.join(PROMPT_SETS)}")
        return name
    recorded = recorded_prompts(run_dir) if run_dir is not None else None
    if recorded is not None and recorded not in PROMPT_SETS:
        raise InputError(f"{run_dir} was made with prompt set {recorded!r}, which this version does not have "
                         f"(it has {', '.join(PROMPT_SETS)})")
    return recorded or DEFAULT_PROMPTS


def make_plan(pitches: str, goods: str | None, stages: str, personas: str | None,
              params: ModelParams, base_url: str | None, prompts: str | None = None,
              run_dir: str | Path | None = None, encoding: str | None = None) -> Plan:
    """Load and check every input and build the run manifest; nothing is sent.

    ``prompts`` names the prompt set; None means the one ``run_dir`` was made
    with, or the default for a new run (:func:`choose_prompts`). ``encoding``
    is the pitches file's (``--encoding``; None: UTF-8). ``base_url`` None: the run goes to
    declared endpoints, which the manifest does not name (a run resumes on another set).
    """
    prompt_set = choose_prompts(prompts, run_dir)
    chosen = parse_stages(stages, prompt_set)
    persona_set = load_personas(personas) if personas else WORDINGS[prompt_set].personas
    df = load_pitches(pitches, encoding=encoding)
    showcase = None
    inputs = {"pitches": sha256_file(pitches)}
    if needing := [s.name for s in chosen if s.needs_showcase]:
        if not goods:
            raise InputError(f"--goods is required when scoring stage {', '.join(needing)}")
        showcase = load_showcase(goods)
        check_showcase(df, showcase, Path(goods).name)
        inputs["goods"] = sha256_file(goods)
    # named for every set but the first, so that the manifests of runs made before sets stay valid
    named = prompt_set if prompt_set != UNNAMED_PROMPTS else None
    return Plan(df, showcase, chosen, persona_set, params,
                run_manifest(params, base_url, chosen, persona_set, inputs, named))


def run_manifest(params: ModelParams, base_url: str | None, stages: Sequence[Stage], personas: Sequence[Persona],
                 inputs: dict[str, str], prompts: str | None = None) -> Manifest:
    """The manifest of a run that asks ``stages`` x ``personas`` with ``params`` at ``base_url``."""
    return Manifest(params.model, endpoint_host(base_url) if base_url else None, params.manifest(),
                    {s.name: s.version for s in stages}, personas_json(tuple(personas)), inputs, prompts)


def scan_done(plan: Plan, run_dir: RunDir | None = None) -> DoneTable:
    """What the run directory already holds, for the planned requests (none without one).

    A question the provider's content filter refused counts as done unless ``plan.retry_filtered``.
    """
    done = DoneTable(plan.pitches["index"].to_numpy(), [s.name for s in plan.stages], [p.key for p in plan.personas])
    if run_dir is not None:
        for s in plan.stages:
            for ids in run_dir.ok_ids(s.name):
                done.add(s.name, ids)
            if not plan.retry_filtered:
                done.add(s.name, run_dir.failed_with(s.name, CONTENT_FILTER))
    return done


def plan_jobs(plan: Plan, done: DoneTable) -> tuple[Iterator[Job], int]:
    """The jobs not yet done (built lazily) and how many there are."""
    todo = done.flags.size - done.count()

    def jobs() -> Iterator[Job]:
        rows = np.flatnonzero(done.pending_rows())  # finished pitches are skipped before they are built
        pitches = plan.pitches if len(rows) == len(plan.pitches) else plan.pitches.iloc[rows]
        for row, pitch in zip(rows, iter_pitches(pitches, plan.showcase)):
            for req in iter_requests((pitch,), plan.stages, plan.personas, done.done_ids(int(row))):
                meta: dict[str, Any] = {"stage": req.stage, "index": req.index, "persona": req.persona}
                if req.n_items:
                    meta["n_items"] = req.n_items
                yield Job(req.id, req.stage, plan.params.payload(req.messages, req.stage, req.schema),
                          meta, estimate_tokens(req.messages, plan.params.max_tokens))

    return jobs(), todo


# ----------------------------------------------------------------- done table

_INDEX = re.compile(rb"-?[0-9]{1,18}")


class _Numbers(dict[bytes, int]):
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

    def __init__(self, indices: Sequence[int] | np.ndarray, stages: Sequence[str], personas: Sequence[str]) -> None:
        self._indices = np.asarray(indices, dtype=np.int64)
        self._order = np.argsort(self._indices, kind="stable")
        self._sorted = self._indices[self._order]
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
        raw = list(ids)
        s = self._stage.get(stage)
        if s is None or not raw:
            return
        index, persona = _split(stage.encode(), raw, self._numbers)
        rows = self._rows(index)
        ok = (rows >= 0) & (persona >= 0)
        self.flags[s, rows[ok], persona[ok]] = True

    def count(self) -> int:
        return int(self.flags.sum())

    def pending_rows(self) -> np.ndarray:
        """Boolean per pitch row: some request of it is not done."""
        return np.asarray(~self.flags.all(axis=(0, 2)))

    def done_ids(self, row: int) -> dict[str, set[str]]:
        """The done request ids of the pitch in ``row``, by stage (usually none)."""
        flags = self.flags[:, row]
        if not flags.any():
            return {}
        index = int(self._indices[row])
        personas = list(self._persona)
        return {stage: {request_id(stage, index, personas[k]) for k in np.flatnonzero(flags[s])}
                for stage, s in self._stage.items()}
