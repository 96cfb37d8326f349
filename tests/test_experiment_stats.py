"""The summary's statistics against published values, and the tables built from them."""

from __future__ import annotations

import math

import pytest

from liveroom.experiment.stats import betainc, mean_std, paired, t_quantile, t_two_sided_p
from liveroom.experiment.tables import METRICS, summary_markdown, summary_rows

# Student's t, 0.975 quantile (two-sided 95 %), from the standard tables
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 19: 2.0930, 29: 2.0452, 120: 1.9799}


@pytest.mark.parametrize("df, want", sorted(T975.items()))
def test_t_quantile_matches_the_table(df, want):
    assert t_quantile(0.975, df) == pytest.approx(want, abs=5e-5)
    assert t_two_sided_p(want, df) == pytest.approx(0.05, abs=1e-4)


def test_t_and_beta_values():
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    assert t_two_sided_p(2.0, 5) == pytest.approx(0.101939, abs=1e-6)   # 2 * (1 - F(2; 5))
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)        # Cauchy: P(|T| > 1) = 1/2
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)    # = P(Binomial(4, 0.4) >= 2)
    assert t_quantile(0.995, 4) == pytest.approx(4.6041, abs=5e-5)


def test_mean_std_and_paired():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, pytest.approx(math.sqrt(5 / 3)))
    m, s = mean_std([7.0])
    assert m == 7.0 and math.isnan(s)
    c = paired([1.0, 2.0, 3.0, 4.5], [0.5, 1.2, 2.9, 3.0])   # d = 0.5, 0.8, 0.1, 1.5
    d_sd = math.sqrt(sum((x - 0.725) ** 2 for x in (0.5, 0.8, 0.1, 1.5)) / 3)
    assert c.mean == pytest.approx(0.725) and c.t == pytest.approx(0.725 / (d_sd / 2))
    assert (c.low, c.high) == (pytest.approx(0.725 - 3.18245 * d_sd / 2, abs=1e-4),
                               pytest.approx(0.725 + 3.18245 * d_sd / 2, abs=1e-4))
    assert c.p == pytest.approx(t_two_sided_p(c.t, 3)) and 0.05 < c.p < 0.1
    same = paired([1.0, 2.0], [0.5, 1.5])                      # every seed 0.5 better: no spread
    assert same.low == same.high == 0.5 and same.p == 0.0
    assert math.isnan(paired([1.0], [2.0]).p)


def _results():
    rows = []
    for arm, base in (("tabular", 0.7), ("llm", 0.4)):
        for seed, noise in enumerate((0.01, -0.02, 0.015)):
            rows.append({"arm": arm, "seed": seed, "best_epoch": 5 + seed, "epochs_run": 8, "stopped_early": True,
                         **{f"test_{m}": base + noise for m in METRICS}})
    return rows


def test_summary_tables():
    rows = summary_rows(_results(), ["tabular", "llm"])
    llm = next(r for r in rows if r["arm"] == "llm" and r["metric"] == "test_rmse_log_gmv")
    assert llm["compared_with"] == "tabular" and llm["diff_mean"] == pytest.approx(-0.3)
    assert llm["ci95_low"] == llm["ci95_high"] == pytest.approx(-0.3)  # the same noise per seed in both arms
    tab = next(r for r in rows if r["arm"] == "tabular" and r["metric"] == "test_rmse_log_gmv")
    assert tab["compared_with"] == "" and tab["mean"] == pytest.approx(0.7016667, abs=1e-6) and tab["n"] == 3
    text = summary_markdown(rows, ["tabular", "llm"], [0, 1, 2])
    assert "| tabular | 0.7017 ± 0.0189 |" in text and "| llm | -0.3000 [-0.3000, -0.3000], p < 0.001 |" in text
    assert "6.0 ± 1.0" in text   # selected epoch
