"""Mean ± sample std over seeds, and the paired comparison of two arms: pure functions, no scipy.

The comparison of arm A with the baseline B over the same seeds takes the
per-seed differences d = A - B: their mean, the 95 % interval
mean ± t(0.975, n-1) · sd / sqrt(n), and the paired t-test's statistic
t = mean / (sd / sqrt(n)) with its two-sided p-value. Student's t
distribution comes from the regularized incomplete beta function
(continued fraction, as in Numerical Recipes §6.4):
P(|T| > t) = I_{n/(n+t²)}(n/2, 1/2) for n degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NAN = float("nan")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for fewer than two values)."""
    n = len(values)
    if not n:
        return NAN, NAN
    m = sum(values) / n
    if n < 2:
        return m, NAN
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 <= p < 1) of Student's t with ``df`` degrees of freedom, by bisection."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile: p = {p} is outside [0.5, 1)")
    tail = 2.0 * (1.0 - p)  # the two-sided tail probability at the quantile
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided_p(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2.0


@dataclass
class Paired:
    """Arm minus baseline over the same seeds."""

    n: int
    mean: float
    low: float     # 95 % interval of the mean difference
    high: float
    t: float
    p: float       # two-sided paired t-test


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """The paired comparison of ``a`` with ``b`` (one value per seed each, same order)."""
    if len(a) != len(b):
        raise ValueError("paired: the two arms have different numbers of seeds")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    m, sd = mean_std(d)
    if n < 2:
        return Paired(n, m, NAN, NAN, NAN, NAN)
    se = sd / math.sqrt(n)
    if se == 0.0:  # every seed gives the same difference
        return Paired(n, m, m, m, math.copysign(math.inf, m) if m else NAN, 0.0 if m else 1.0)
    half = t_quantile(0.975, n - 1) * se
    t = m / se
    return Paired(n, m, m - half, m + half, t, t_two_sided_p(t, n - 1))
