"""What the chat simulator does, as one dataclass the ``bin/sim-server`` flags map onto."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..errors import LiveroomError
from .profiles import PROFILES

#: injectable faults, in the order a request's draw tries them
FAULT_KINDS = ("429", "500", "503", "reset", "slow", "nonjson", "fenced", "out_of_range", "wrong_key", "quota",
               "content_filter", "think", "null_content")
CAP_CODES = ("profile", "none")  # --cap-code: the profile's cap answer, or OpenAI's rate_limit_exceeded


def flag(name: str) -> str:
    """The command-line spelling of a setting (``p_out_of_range``: ``p-out-of-range``)."""
    return name.replace("_", "-")


@dataclass
class SimConfig:
    """Everything the simulator does; the CLI flags map one to one onto these."""

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    model: str = "liveroom-sim"
    api_key: str | None = field(default=None, repr=False)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    p_429: float = 0.0
    p_500: float = 0.0
    p_503: float = 0.0
    p_reset: float = 0.0
    p_slow: float = 0.0
    p_nonjson: float = 0.0
    p_fenced: float = 0.0
    p_out_of_range: float = 0.0
    p_wrong_key: float = 0.0
    p_quota: float = 0.0
    p_content_filter: float = 0.0
    p_think: float = 0.0
    p_null_content: float = 0.0
    retry_after: float = 1.0
    retry_after_ms: float | None = None  # None: --retry-after in milliseconds
    slow_ms: float = 30000.0
    fail_first: int = 0
    fail_first_kind: str = "500"
    rpm_limit: int = 0
    tpm_limit: int = 0
    ratelimit_headers: bool = False
    profile: str = "openai"
    max_inflight: int = 0
    cap_code: str = "profile"
    arrears_after: int | None = None
    log_requests: bool = False
    record_requests: str | None = None  # a file each chat request body is appended to, one JSON line each
    no_logprobs: bool = False  # answer logprobs: null even when a request asks them (a server that ignores them)

    def __post_init__(self) -> None:
        if isinstance(self.fail_first_kind, str):
            self.fail_first_kind = self.fail_first_kind.replace("-", "_")

    def fault_probabilities(self) -> tuple[tuple[str, float], ...]:
        """(kind, probability) of the faults switched on, in :data:`FAULT_KINDS` order."""
        return tuple((k, getattr(self, "p_" + k)) for k in FAULT_KINDS if getattr(self, "p_" + k) > 0)

    def validate(self) -> None:
        """Raise :class:`LiveroomError` naming the first bad setting."""
        for f in fields(self):
            if f.name.startswith("p_"):
                p = getattr(self, f.name)
                if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                    raise LiveroomError(f"--{flag(f.name)} must be a probability in [0, 1], got {p!r}")
        total = sum(p for _, p in self.fault_probabilities())
        if total > 1.0 + 1e-9:
            raise LiveroomError(f"the fault probabilities are exclusive and must sum to at most 1, got {total:g}")
        for name in ("latency_ms", "jitter_ms", "retry_after", "slow_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise LiveroomError(f"--{flag(name)} must be a number >= 0, got {v!r}")
        if self.retry_after_ms is not None and not (
                isinstance(self.retry_after_ms, (int, float)) and math.isfinite(self.retry_after_ms)
                and self.retry_after_ms >= 0):
            raise LiveroomError(f"--retry-after-ms must be a number >= 0, got {self.retry_after_ms!r}")
        for name in ("fail_first", "rpm_limit", "tpm_limit", "max_inflight"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise LiveroomError(f"--{flag(name)} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.fail_first_kind not in FAULT_KINDS:
            raise LiveroomError(
                f"--fail-first-kind must be one of {', '.join(FAULT_KINDS)}, got {self.fail_first_kind!r}")
        if self.arrears_after is not None and (not isinstance(self.arrears_after, int) or self.arrears_after < 0):
            raise LiveroomError(f"--arrears-after must be an integer >= 0, got {self.arrears_after!r}")
        if self.profile not in PROFILES:
            raise LiveroomError(f"--profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.cap_code not in CAP_CODES:
            raise LiveroomError(f"--cap-code must be one of {', '.join(CAP_CODES)}, got {self.cap_code!r}")
        if self.ratelimit_headers and not (self.rpm_limit or self.tpm_limit):
            raise LiveroomError("--ratelimit-headers needs --rpm-limit or --tpm-limit (the limits they report)")
        if not 0 <= self.port <= 65535:
            raise LiveroomError(f"--port must be in 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key:
            raise LiveroomError("--api-key must not be empty")
