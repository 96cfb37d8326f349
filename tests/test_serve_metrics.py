"""GET /metrics: the Prometheus text format, read back with prometheus-client's own parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from kit import call, make_pitch, serve_over, sim_stats


def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics by name (labels appended as ``name{k=v}``)."""
    with urllib.request.urlopen(url + "/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" in s.labels:
                continue
            samples[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return samples


def test_metrics_count_forecasts_cache_hits_questions_and_429s(servers, model_dir, tmp_path):
    sim = servers("sim-server")
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache", "--pitches-per-minute", "1",
                       "--concurrency", "8")
    before = scrape(serve.url)
    assert before["liveroom_forecasts_total"] == 0 and before["liveroom_concurrency_limit"] == 8
    assert call(serve.url + "/v1/forecast", make_pitch(0))[0] == 200
    assert call(serve.url + "/v1/forecast", make_pitch(0, user_cnt=5))[0] == 200  # cached: free
    assert call(serve.url + "/v1/forecast", make_pitch(1))[0] == 429
    m = scrape(serve.url)
    assert m["liveroom_forecasts_total"] == 2
    assert m["liveroom_forecast_cache_hits_total"] == 1
    assert m["liveroom_questions_sent_total"] == 24 == sim_stats(sim)["requests"]
    assert m["liveroom_rate_limited_total"] == 1
    assert m["liveroom_responses_total{status=200}"] == 2 and m["liveroom_responses_total{status=429}"] == 1
    assert m["liveroom_forecast_seconds_count"] == 2 and m["liveroom_forecast_seconds_sum"] > 0
    assert 1 <= m["liveroom_concurrency_limit"] <= 8 and m["liveroom_questions_in_flight"] == 0
