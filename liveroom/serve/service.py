"""One engine set-up, one set of limits and one answer cache for every forecast in flight.

Each forecast runs the questions it still lacks through an
:class:`~liveroom.async_client.engine.Engine` of its own, but all of them
share the chat client (its connection pool and ``--provider``'s error codes),
one live concurrency limit of at most ``--concurrency`` requests in flight
(what one forecast learns of the provider's cap, the next one starts from;
fixed under ``--fixed-concurrency``), the :class:`~liveroom.async_client.limits.Limits`
(``--rpm``, ``--tpm``, the cool-down after a 429) and the cache: a run
directory (manifest + one JSONL per stage, as bin/score writes it) read once
at start and appended to with every answer. A question already answered is
not asked again; one asked by a forecast still in flight is waited for, not
sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..async_client.concurrency import ConcurrencyLimit
from ..async_client.engine import Client, Endpoint, Engine, Job
from ..async_client.limits import Limits
from ..async_client.record import Record
from ..async_client.run_dir import RunDir
from ..async_client.transport import endpoint_host, redact
from ..data.layout import N_TABULAR, input_names
from ..data.personas import DEFAULT_PERSONAS, PERSONA_KEYS
from ..errors import InputError, LiveroomError
from ..locks import locked
from ..prompts.stages import STAGES
from ..scoring.endpoints import open_endpoint
from ..scoring.engine_flags import ChatSettings
from ..scoring.plan import StageTask
from ..scoring.probs_flags import DEFAULT_TOP_LOGPROBS, ask_probabilities
from ..train.checkpoint import load_model
from ..train.config import TrainConfig
from ..train.predict import predict
from .forecast import Pitch, cache_manifest, model_inputs, persona_scores, pitch_jobs, prediction, request_ids

LOCK = "serve.lock"


class ProviderError(Exception):
    """Some question got no usable answer from the provider; the message says which and why."""


class Forecaster:
    """The sales model, the cache of answers and the shared engine parts; use ``async with``."""

    def __init__(self, model_dir: str | Path, cache_dir: str | Path, settings: ChatSettings) -> None:
        self.model_dir, self.cache_dir, self.settings = Path(model_dir), Path(cache_dir), settings
        self.net, self.ck = load_model(self.model_dir)
        if self.ck["personas"] != list(PERSONA_KEYS):
            raise InputError(f"{self.model_dir}: model was trained for personas {', '.join(self.ck['personas'])}")
        self.with_llm = len(self.ck["inputs"]) > N_TABULAR
        if self.ck["inputs"] != input_names(self.with_llm):
            raise InputError(f"{self.model_dir}: the model's inputs are not this version's columns")
        #: which value of each answer's scores the model reads (``bin/train --scores``); ``expected``
        #: wants the replies' probabilities, and reads the integer of an answer without them
        self.score_kind = TrainConfig.from_dict(self.ck["config"]).scores
        #: what the service says once at its start (a provider that caps or returns no probabilities)
        self.notes: list[str] = []
        if self.score_kind == "expected" and settings.params.top_logprobs is None:
            params, self.notes = ask_probabilities(settings.params, DEFAULT_TOP_LOGPROBS,
                                                   [spec.provider for spec in settings.pool])
            self.settings = settings = replace(settings, params=params)
        summary = self.model_dir / "summary.json"
        self.summary: dict[str, Any] = json.loads(summary.read_text()) if summary.exists() else {}
        self.stages, self.personas = tuple(STAGES.values()), DEFAULT_PERSONAS
        self.manifest = cache_manifest(settings.params, settings.manifest_url, self.stages, self.personas)
        self.checkpoint = RunDir(self.cache_dir)
        self.answers: dict[str, dict[str, Any]] = {}  # request id -> scores of its last ok answer
        self.counts = {"forecasts": 0, "requests_sent": 0}
        self._failed: dict[str, str] = {}              # request id -> why its last try failed
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._stack = contextlib.AsyncExitStack()
        self._client: Client | None = None
        self._limits: Limits | None = None
        self._limiter: ConcurrencyLimit | None = None  # the live concurrency limit over all forecasts
        self._endpoints: list[Endpoint] = []  # each endpoint's client, limits and outage, over all forecasts
        self._started = time.monotonic()

    async def __aenter__(self) -> Forecaster:
        s = self.settings
        self._stack.enter_context(locked(self.cache_dir / LOCK, "bin/serve", self.cache_dir))
        self.checkpoint.open(self.checkpoint.check(self.manifest))
        self._stack.callback(self.checkpoint.close)
        for stage in self.stages:
            for rec in self.checkpoint.records(stage.name):
                if rec.ok:
                    self.answers[rec.id] = rec.scores
        self._endpoints = [await open_endpoint(self._stack, spec, s.timeout, s.engine) for spec in s.pool]
        first = self._endpoints[0]
        self._client, self._limits, self._limiter = first.client, first.limits, first.limiter
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # ------------------------------------------------------------- forecasting

    async def forecast(self, pitch: Pitch) -> dict[str, Any]:
        """The prediction for ``pitch``, asking only what the cache lacks; :class:`ProviderError` if unanswered."""
        jobs = pitch_jobs(pitch, self.stages, self.personas, self.settings.params, self.answers)
        theirs = [self._pending[j.id] for j in jobs if j.id in self._pending]
        sent = await self._ask([j for j in jobs if j.id not in self._pending])
        await asyncio.gather(*theirs)
        ids = request_ids(pitch, self.stages, self.personas)
        missing = [i for i in ids if i not in self.answers]
        if missing:
            why = self._failed.get(missing[0], "no answer")
            raise ProviderError(redact(f"{len(missing)} of {len(ids)} questions got no usable answer; "
                                       f"first: {missing[0]}: {why}", self.settings.api_key))
        scores = persona_scores(self.answers, pitch, self.stages, self.personas, self.score_kind)
        out = predict(self.net, self.ck, model_inputs(pitch, scores if self.with_llm else None, PERSONA_KEYS))
        self.counts["forecasts"] += 1
        return {"index": pitch.index, "prediction": prediction(out[0], PERSONA_KEYS), "scores": scores,
                "requests_sent": sent, "model": self.model_brief()}

    async def forecast_many(self, pitches: list[Pitch]) -> tuple[list[dict[str, Any]], int]:
        """Every forecast (all at once, sharing the engine) and the requests they sent together."""
        results = await asyncio.gather(*(self.forecast(p) for p in pitches), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        done = [r for r in results if isinstance(r, dict)]
        return done, sum(r["requests_sent"] for r in done)

    async def _ask(self, jobs: list[Job]) -> int:
        """Send ``jobs`` through a fresh engine over the shared parts; the HTTP requests it sent."""
        if not jobs:
            return 0
        assert self._client is not None and self._limits is not None and self._limiter is not None, \
            "use Forecaster with async with"
        loop = asyncio.get_running_loop()
        mine = {j.id: loop.create_future() for j in jobs}
        self._pending.update(mine)
        config = replace(self.settings.engine, concurrency=min(self.settings.engine.concurrency, len(jobs)))
        # the endpoints' shared parts, with this forecast's own state (retirement, counts)
        pool = [Endpoint(e.name, e.client, e.limits, e.limiter, e.outage) for e in self._endpoints]
        engine = Engine(self._client, self._limits, self.checkpoint, StageTask(), config, on_record=self._record,
                        limiter=self._limiter, endpoints=pool)
        try:
            await engine.run(iter(jobs), len(jobs))
        except LiveroomError as e:  # bad key, no quota, no endpoint: every question left fails with that reason
            for rid in mine:
                self._failed.setdefault(rid, str(e))
        finally:
            for rid, fut in mine.items():
                if not fut.done():
                    fut.set_result(None)
                if self._pending.get(rid) is fut:
                    del self._pending[rid]
            self.counts["requests_sent"] += engine.stats.sent
        return engine.stats.sent

    def _record(self, record: Record) -> None:
        """Keep an answer (or why it failed) and wake the forecasts waiting for it."""
        if record.ok:
            self.answers[record.id] = record.scores
            self._failed.pop(record.id, None)
        else:
            self._failed[record.id] = record.error or record.status
        fut = self._pending.get(record.id)
        if fut is not None and not fut.done():
            fut.set_result(None)

    # ------------------------------------------------------------- describing

    def is_cached(self, pitch: Pitch) -> bool:
        """Whether every question of ``pitch`` has its answer here (a forecast of it sends nothing)."""
        return all(i in self.answers for i in request_ids(pitch, self.stages, self.personas))

    def concurrency_limit(self) -> float:
        """The live limit of questions in flight over all forecasts."""
        return self._limiter.current if self._limiter is not None else self.settings.engine.concurrency

    def in_flight(self) -> float:
        """Questions asked and not answered yet."""
        return len(self._pending)

    def model_brief(self) -> dict[str, Any]:
        """What a forecast says about the model that made it."""
        return {"dir": self.model_dir.name, "inputs": "tabular+llm" if self.with_llm else "tabular",
                "scores": self.score_kind,
                "best_epoch": self.summary.get("best_epoch", self.ck.get("epoch")),
                "llm": self.settings.params.model}

    def model_info(self) -> dict[str, Any]:
        """GET /v1/model: what the model was trained on, its metrics, and what the questions go to."""
        s, cfg = self.summary, self.ck.get("config", {})
        p = self.settings.params
        return {
            **self.model_brief(),
            "model_dir": str(self.model_dir),
            "trained_on": {"pitches": cfg.get("pitches"), "features": cfg.get("features"),
                           "n_pitches": s.get("n_pitches"), "dropped_pitches": s.get("dropped_pitches"),
                           "preset": cfg.get("preset"), "epochs_run": s.get("epochs_run")},
            "input_columns": list(self.ck["inputs"]),
            "targets": list(self.ck["targets"]),
            "personas": list(self.ck["personas"]),
            "persona_names": {p.key: p.name for p in self.personas},
            "test": s.get("test", {}), "val": s.get("val", {}),
            "questions": {"endpoint": endpoint_host(self.settings.base_url),
                          "provider": self.settings.provider.name if self.settings.provider else None,
                          "model": p.model,
                          "temperature": p.temperature, "max_tokens": p.max_tokens,
                          "response_format": p.response_format,
                          "stages": {st.name: st.version for st in self.stages},
                          "per_pitch": len(self.stages) * len(self.personas)},
            "cache": {"dir": str(self.cache_dir), "answers": len(self.answers)},
        }

    def health(self) -> dict[str, Any]:
        """GET /healthz: up, and what it has done."""
        limit = self._limiter.describe() if self._limiter is not None else None
        return {"status": "ok", "answers": len(self.answers), "in_flight": len(self._pending), "concurrency": limit,
                "uptime_s": round(time.monotonic() - self._started, 1), **self.counts}
