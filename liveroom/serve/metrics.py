"""``GET /metrics``: what the service has done, in the Prometheus text format.

Built with ``prometheus-client`` on a registry of the application's own (not
the process-global one), so two applications in one process never share a
count.

=======================================  =========  ===========================================
metric                                   type       what
=======================================  =========  ===========================================
``liveroom_forecasts_total``             counter    pitches forecast (200 answers)
``liveroom_forecast_cache_hits_total``   counter    pitches whose every answer was in the cache
``liveroom_questions_sent_total``        counter    HTTP requests sent to the model provider
``liveroom_rate_limited_total``          counter    requests answered 429 (per-client pitch limit)
``liveroom_responses_total{status}``     counter    API replies by status
``liveroom_concurrency_limit``           gauge      the live limit of questions in flight
``liveroom_questions_in_flight``         gauge      questions now asked and not yet answered
``liveroom_forecast_seconds``            histogram  time to answer POST /v1/forecast and :batch
=======================================  =========  ===========================================
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The service's metrics on a registry of their own."""

    def __init__(self, concurrency: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.registry = r = CollectorRegistry()
        self.forecasts = Counter("liveroom_forecasts", "Pitches forecast", registry=r)
        self.cache_hits = Counter("liveroom_forecast_cache_hits", "Pitches forecast from the cache alone",
                                  registry=r)
        self.questions_sent = Counter("liveroom_questions_sent", "HTTP requests sent to the model provider",
                                      registry=r)
        self.rate_limited = Counter("liveroom_rate_limited", "Requests refused by the per-client pitch limit",
                                    registry=r)
        self.responses = Counter("liveroom_responses", "API replies by HTTP status", ["status"], registry=r)
        Gauge("liveroom_concurrency_limit", "The live limit of questions in flight",
              registry=r).set_function(concurrency)
        Gauge("liveroom_questions_in_flight", "Questions asked and not yet answered",
              registry=r).set_function(in_flight)
        self.latency = Histogram("liveroom_forecast_seconds", "Time to answer a forecast request",
                                 buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300), registry=r)

    def text(self) -> bytes:
        """Every metric, in the Prometheus text exposition format."""
        return generate_latest(self.registry)
