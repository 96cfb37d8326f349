"""Expected scores end to end: bin/score --score-probs, bin/collect, bin/train --scores expected, then
bin/serve with that model, which asks the probabilities itself; the simulator a real process on loopback."""

from __future__ import annotations

import json

import numpy as np

from kit import SERVE_KEY, call, collect, make_pitch, records, score, serve_over
from liveroom.cli import train_main
from liveroom.data.layout import EXPECTED, LLM_FEATURES
from liveroom.synthetic import make_synthetic, write_synthetic


def test_score_collect_train_and_serve_on_expected_scores(tmp_path, servers):
    syn, run, feats, model = (tmp_path / d for d in ("syn", "run", "features", "model"))
    write_synthetic(syn, *make_synthetic(40, seed=3))
    sim = servers("sim-server")
    p = score(syn / "pitches.csv", syn / "goods.json", run, sim.url, "--score-probs", "--concurrency", "16",
              key=SERVE_KEY)
    assert p.returncode == 0, p.stderr
    p = collect(syn / "pitches.csv", run, feats)
    assert p.returncode == 0, p.stderr
    cov = json.loads((feats / "coverage.json").read_text())
    assert all(s["from_probs"] == 40 * 8 for s in cov["stages"].values()), cov
    for f in LLM_FEATURES:  # expected scores, finer than the integers they stand beside
        expected, sampled = np.load(feats / f"{f}{EXPECTED}.npy"), np.load(feats / f"{f}.npy")
        assert expected.shape == sampled.shape == (40, 8) and np.all(np.abs(expected - sampled) < 2)
        assert np.any(expected != np.round(expected))
    assert train_main(["--pitches", str(syn / "pitches.csv"), "--features", str(feats), "--out", str(model),
                       "--epochs", "2", "--hidden", "8", "--scores", "expected"]) == 0

    # the service reads the model's kind and asks the probabilities without being told
    serve = serve_over(servers, sim, model, tmp_path / "cache")
    status, got = call(serve.url + "/v1/forecast", make_pitch())
    assert status == 200, got
    assert got["model"]["scores"] == "expected"
    assert any(v != round(v) for s in got["scores"].values() for v in s.values()), got["scores"]
    cached = records(tmp_path / "cache")
    assert len(cached) == 24 and all(f"{r['stage']}{EXPECTED}" in r["scores"] or "items_expected" in r["scores"]
                                     for r in cached)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["params"]["top_logprobs"] == 5
