"""The synthetic generator: reference format, features exactly as the simulator scores them."""

import json

import numpy as np
import pandas as pd
import pytest

from kit import python_steps
from liveroom.cli import make_synthetic_main
from liveroom.data.inputs import check_showcase, load_pitches, load_showcase
from liveroom.data.layout import LLM_FEATURES, TABULAR_COLUMNS, TARGET_COLUMNS, TEXT_COLUMNS
from liveroom.data.moment import time_features
from liveroom.data.personas import PERSONA_KEYS
from liveroom.sim.heuristic import (
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    buy_latents,
    buy_scores,
    entry_latent,
    entry_score,
    read_latent,
    read_score,
    score_distribution,
)
from liveroom.synthetic import make_synthetic


@pytest.fixture(scope="module")
def syn():
    return make_synthetic(2000, seed=3)


def test_reference_columns_and_order(syn):
    pitches, showcase, features = syn
    assert set(TEXT_COLUMNS) | set(TABULAR_COLUMNS) | set(TARGET_COLUMNS) <= set(pitches.columns)
    assert pitches["index"].tolist() == list(range(2000))
    start = pd.to_datetime(pitches["start"], format="%Y-%m-%d %H:%M")
    assert start.is_monotonic_increasing and start.is_unique
    assert start.dt.year.min() >= 2023 and start.dt.year.max() <= 2025
    tf = time_features(start)
    np.testing.assert_allclose(pitches[tf.columns].to_numpy(), tf.to_numpy())
    assert (pitches["duration"] >= 1).all() and (pitches["user_cnt"] > 0).all()
    for kind in ("watch", "pay"):
        np.testing.assert_allclose(pitches.filter(regex=f"^prop_.*_{kind}$").sum(axis=1), 1.0)
    assert (pitches["log_deal_order_cnt"] >= pitches["log_live_deal_user_cnt"]).all()
    assert pitches["text"].str.contains("包邮|优惠|限时").mean() > 0.2
    assert pitches["text"].str.contains("涨价|没货").mean() > 0.05
    for name in LLM_FEATURES:
        assert features[name].shape == (2000, 8)
        assert ((features[name] >= 1) & (features[name] <= 5)).all()
        if name != "state":  # a mean of item scores; the others are single 1..5 answers
            assert np.isin(features[name], [1, 2, 3, 4, 5]).all()


def test_showcase_format(syn):
    pitches, showcase, _ = syn
    assert set(showcase) == set(pitches["start"])
    sizes = [len(v) for v in showcase.values()]
    assert min(sizes) >= 1 and max(sizes) <= 12
    prices = [it[2] for v in showcase.values() for it in v]
    assert any(p <= 0 for p in prices)
    assert all(v[0][1] == prod and v[0][2] > 0 for v, prod in zip((showcase[s] for s in pitches["start"]), pitches["prod"]))


def test_features_are_the_simulator_answers(syn):
    pitches, showcase, f = syn
    for i in range(0, 2000, 37):
        when = pd.Timestamp(pitches["start"].iat[i])
        kept = [it[2] for it in showcase[pitches["start"].iat[i]] if it[2] > 0][:10]
        for k, key in enumerate(PERSONA_KEYS):
            assert f["entry"][i, k] == entry_score(key, when.hour, bool(pitches["is_workday"].iat[i]))
            buys = buy_scores(key, kept)
            assert f["action"][i, k] == buys[0] and f["state"][i, k] == pytest.approx(np.mean(buys))
            assert f["read"][i, k] == read_score(key, pitches["text"].iat[i])
    assert np.unique(f["read"]).size > 2  # the transcripts move the desire score


def test_filler_phrases_hold_no_heuristic_words():
    from liveroom.synthetic import FILLER, SELLING, WARNING
    words = (*POSITIVE_WORDS, *NEGATIVE_WORDS)
    assert not any(w in p for p in FILLER for w in words)
    assert all(any(w in p for w in POSITIVE_WORDS) for p in SELLING)
    assert all(any(w in p for w in NEGATIVE_WORDS) for p in WARNING)


def test_seeded_and_vectorised():
    a, b = make_synthetic(300, seed=1), make_synthetic(300, seed=1)
    pd.testing.assert_frame_equal(a[0], b[0])
    # a hundred times the pitches, far from a hundred times the Python run (counted, not timed)
    assert python_steps(lambda: make_synthetic(20000, seed=2)) < 20 * python_steps(lambda: make_synthetic(200, seed=2))


def test_cli_writes_files_the_loaders_read(tmp_path):
    assert make_synthetic_main(["--n", "50", "--seed", "4", "--out", str(tmp_path)]) == 0
    pitches = load_pitches(tmp_path / "pitches.csv", numeric=(*TABULAR_COLUMNS, *TARGET_COLUMNS))
    check_showcase(pitches, load_showcase(tmp_path / "goods.json"))
    assert json.loads((tmp_path / "goods.json").read_text(encoding="utf-8"))
    assert np.load(tmp_path / "index.npy").tolist() == list(range(50))
    for name in LLM_FEATURES:
        assert np.load(tmp_path / f"{name}.npy").shape == (50, 8)


def test_expected_scores_and_draws_at_a_temperature(syn):
    """``*_expected`` = sum k p(k) of the simulator's distribution; draws change the integers, nothing else."""
    pitches, showcase, f = syn
    for i in range(0, 2000, 97):
        when = pd.Timestamp(pitches["start"].iat[i])
        kept = [it[2] for it in showcase[pitches["start"].iat[i]] if it[2] > 0][:10]
        for k, key in enumerate(PERSONA_KEYS):
            assert f["entry_expected"][i, k] == pytest.approx(
                _expected(entry_latent(key, when.hour, bool(pitches["is_workday"].iat[i]))))
            items = [_expected(x) for x in buy_latents(key, kept)]
            assert f["action_expected"][i, k] == pytest.approx(items[0])
            assert f["state_expected"][i, k] == pytest.approx(np.mean(items))
            assert f["read_expected"][i, k] == pytest.approx(_expected(read_latent(key, pitches["text"].iat[i])))
    drawn_pitches, _, drawn = make_synthetic(2000, seed=3, draw_temperature=0.2)
    pd.testing.assert_frame_equal(drawn_pitches, pitches)  # the same targets: planted from the modes
    for name in LLM_FEATURES:
        np.testing.assert_array_equal(drawn[f"{name}_expected"], f[f"{name}_expected"])
        if name != "state":
            assert np.isin(drawn[name], [1, 2, 3, 4, 5]).all()
        assert 0.7 < np.mean(drawn[name] == f[name]) < 1  # mostly the mode at T = 0.2, not always
    at_zero = make_synthetic(2000, seed=3, draw_temperature=0.0)[2]
    for name in LLM_FEATURES:
        np.testing.assert_allclose(at_zero[name], f[name])  # T = 0 draws the mode


def _expected(latent):
    return sum(k * p for k, p in zip(range(1, 6), score_distribution(latent, 1.0)))
