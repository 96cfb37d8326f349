"""bin/serve end to end: the simulator and the service as real processes, a model trained here.

A forecast asks 24 questions (3 stages x 8 personas, counted by the
simulator's /stats), the same pitch again asks none, twenty pitches at once
keep to --rpm, a bad pitch is a 400 naming its field with the CSV loader's
rules, and a failing provider is a 502 that never shows the key.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import write_goods, write_pitches
from kit import SERVE_KEY as KEY
from kit import call, make_pitch, serve_flags, serve_over, sim_stats
from liveroom.data.inputs import load_pitches, load_showcase
from liveroom.errors import InputError
from liveroom.serve.forecast import FieldError, check_pitch

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
PERSONAS = ("Z", "exquisite_mother", "new_white", "deep_middle", "city_blue", "city_old", "town_youth", "town_old")
# ----------------------------------------------------------------- forecasts


def test_forecast_asks_24_questions_then_none(servers, model_dir, tmp_path):
    sim = servers("sim-server")
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache")
    status, got = call(serve.url + "/v1/forecast", make_pitch())
    assert status == 200, got
    assert got["requests_sent"] == 24 and sim_stats(sim)["requests"] == 24
    pred = got["prediction"]
    for t in ("log_gmv", "log_deal_order_cnt", "log_live_deal_user_cnt", "log_watch_user_cnt"):
        assert math.isfinite(pred[t])
    for share in ("watch_share", "pay_share"):
        assert list(pred[share]) == list(PERSONAS) and sum(pred[share].values()) == pytest.approx(1, abs=1e-5)
    assert list(got["scores"]) == ["entry", "state", "action", "read"]
    assert all(list(s) == list(PERSONAS) and all(1 <= v <= 5 for v in s.values()) for s in got["scores"].values())
    assert got["model"]["inputs"] == "tabular+llm"

    status, again = call(serve.url + "/v1/forecast", make_pitch())
    assert status == 200 and again["requests_sent"] == 0 and sim_stats(sim)["requests"] == 24
    assert again["prediction"] == pred and again["index"] == got["index"]
    # the audience and length enter only the model: same questions, nothing sent, another prediction
    status, longer = call(serve.url + "/v1/forecast", make_pitch(duration=9))
    assert status == 200 and longer["requests_sent"] == 0 and longer["scores"] == got["scores"]
    assert longer["prediction"] != pred

    # the cache is a run directory, kept across restarts
    cache = tmp_path / "cache"
    assert json.loads((cache / "manifest.json").read_text())["groups"].keys() == {"entry", "buy", "read"}
    assert all(len((cache / f"{s}.jsonl").read_text().splitlines()) == 8 for s in ("entry", "buy", "read"))
    assert serve.stop() == 0
    serve = serve_over(servers, sim, model_dir, cache)
    status, restarted = call(serve.url + "/v1/forecast", make_pitch())
    assert status == 200 and restarted["requests_sent"] == 0 and restarted["prediction"] == pred
    assert sim_stats(sim)["requests"] == 24
    assert KEY not in serve.stderr()
    # one service per cache: a second one is refused while this one runs ...
    other = [sys.executable, str(BIN / "serve"), *serve_flags(sim, model_dir, cache)[:4],
             "--base-url", "http://127.0.0.1:9/v1", "--port", "0"]
    p = subprocess.run(other, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "listening" not in p.stdout
    assert "is in use by" in p.stderr.splitlines()[-1], p.stderr
    # ... and a cache is bound to what its answers mean: another endpoint is refused, in one line
    assert serve.stop() == 0
    p = subprocess.run(other, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "listening" not in p.stdout
    assert "endpoint" in p.stderr.splitlines()[-1], p.stderr


def test_twenty_pitches_at_once_keep_the_rpm_limit(servers, model_dir, tmp_path):
    rpm = 4800  # 80 a second: 480 questions take at least 479 / 80 s
    sim = servers("sim-server", "--latency-ms", "10")
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache", "--rpm", str(rpm))
    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda n: call(serve.url + "/v1/forecast", make_pitch(n)), range(20)))
    elapsed = time.monotonic() - t0
    assert all(status == 200 for status, _ in results), results[0]
    assert sum(r["requests_sent"] for _, r in results) == 480 and sim_stats(sim)["requests"] == 480
    assert len({r["index"] for _, r in results}) == 20
    assert elapsed >= 479 * 60 / rpm, elapsed
    counts = [n for _, n in sim_stats(sim)["per_second"]]
    per_second = rpm / 60
    assert max(counts) <= per_second * 1.25 + 2, counts  # arrivals jitter a little around a second's edge
    assert all(a + b <= 2 * per_second + 3 for a, b in zip(counts, counts[1:])), counts


def test_batch_shares_one_concurrency_limit(servers, model_dir, tmp_path):
    sim = servers("sim-server", "--latency-ms", "60")
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache", "--concurrency", "4")
    status, first = call(serve.url + "/v1/forecast", make_pitch(0))
    assert status == 200
    batch = [make_pitch(0), make_pitch(1), make_pitch(2), make_pitch(1)]  # one known, one asked twice
    status, got = call(serve.url + "/v1/forecast:batch", {"pitches": batch})
    assert status == 200, got
    assert [f["requests_sent"] for f in got["forecasts"]][0] == 0 and got["requests_sent"] == 48
    assert got["forecasts"][0]["prediction"] == first["prediction"]
    assert got["forecasts"][1]["prediction"] == got["forecasts"][3]["prediction"]
    stats = sim_stats(sim)
    assert stats["requests"] == 72  # pitch 1, in the batch twice, asked once
    assert stats["max_in_flight"] == 4  # over all forecasts, not 4 each
    status, listed = call(serve.url + "/v1/forecast:batch", batch[:2])  # a bare list works too
    assert status == 200 and listed["requests_sent"] == 0 and len(listed["forecasts"]) == 2


# ----------------------------------------------------------------- errors


def test_bad_pitches_are_400_naming_the_field(plain):
    sim, serve = plain
    before = sim_stats(sim)["requests"]
    untitled = make_pitch()
    del untitled["title"]
    cases = [
        (untitled, "title", "is required"),
        (make_pitch(start="2024-13-45 99:99"), "start", "is not YYYY-MM-DD HH:MM"),
        (make_pitch(start="2024-3-8 20:00"), "start", "is not YYYY-MM-DD HH:MM"),
        (make_pitch(start="1999-03-08 20:00"), "start", "calendar"),
        (make_pitch(duration="three"), "duration", "is not a finite number"),
        (make_pitch(user_cnt=None), "user_cnt", "is not a finite number"),
        (make_pitch(prod=7), "prod", "must be text"),
        (make_pitch(showcase=[[0, "赠品", 0]]), "showcase", "no showcase items"),
        (make_pitch(showcase=[[0, "袜子", "29.9"]]), "showcase", "item 1: expected [idx, name, price]"),
        (make_pitch(colour="red"), "colour", "is not a pitch field"),
        (b"{not json", "body", "not valid JSON"),
        ([make_pitch()], "body", "expected a JSON object"),
    ]
    for body, field, words in cases:
        status, got = call(serve.url + "/v1/forecast", body)
        assert status == 400, (field, got)
        assert got["error"]["field"] == field and words in got["error"]["message"], got
    status, got = call(serve.url + "/v1/forecast:batch", [make_pitch(), untitled])
    assert status == 400 and got["error"]["field"] == "pitches[1].title", got
    status, got = call(serve.url + "/v1/forecast:batch", {"pitches": []})
    assert status == 400 and got["error"]["field"] == "pitches", got
    assert sim_stats(sim)["requests"] == before
    assert "400" in serve.stderr() and "title: is required" in serve.stderr()


@pytest.mark.parametrize("flags, kind, words", [
    (("--api-key", "sk-the-right-one-77"), "key", "401"),       # a wrong key: fatal at once
    (("--p-500", "1"), "server", "500"),                          # every answer a server error
    (("--p-nonjson", "1"), "reply", "no JSON"),                   # replies that never parse
])
def test_provider_failure_is_502_without_the_key(servers, model_dir, tmp_path, flags, kind, words):
    sim = servers("sim-server", *flags)
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache", "--max-retries", "1", "--max-reasks", "1")
    status, got = call(serve.url + "/v1/forecast", make_pitch())
    assert status == 502, got
    message = got["error"]["message"]
    assert message.startswith("the model provider failed") and words in message, message
    assert KEY not in json.dumps(got) and KEY not in serve.stderr()
    assert "502" in serve.stderr()
    status, health = call(serve.url + "/healthz")
    assert status == 200 and health["answers"] == 0


def test_healthz_model_and_page(plain, model_dir):
    sim, serve = plain
    status, health = call(serve.url + "/healthz")
    assert status == 200 and health["status"] == "ok"
    status, info = call(serve.url + "/v1/model")
    summary = json.loads((model_dir / "summary.json").read_text())
    assert status == 200 and info["test"] == summary["test"] and info["best_epoch"] == summary["best_epoch"]
    assert len(info["input_columns"]) == 40 and info["personas"] == list(PERSONAS)
    assert info["trained_on"]["n_pitches"] == summary["n_pitches"]
    assert info["questions"]["per_pitch"] == 24 and info["questions"]["endpoint"] == sim.url
    assert KEY not in json.dumps(info)
    call(serve.url + "/v1/forecast", make_pitch(99))
    after = call(serve.url + "/healthz")[1]
    assert after["answers"] == health["answers"] + 24 and after["forecasts"] == health["forecasts"] + 1
    with urllib.request.urlopen(serve.url + "/") as r:
        html = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html") and 'name="showcase"' in html
    with urllib.request.urlopen(serve.url + "/page/app.js") as r:
        assert r.headers["Content-Type"].startswith("text/javascript")


# ----------------------------------------------------------------- the loader's rules, in-process


@pytest.mark.parametrize("field, value", [
    ("start", "2024-1-5 6:05"), ("start", "2024-02-30 10:00"), ("start", "1999-03-08 20:00"),
    ("duration", "nan"), ("duration", "inf"), ("user_cnt", "12k"),
])
def test_a_field_is_refused_as_the_csv_loader_refuses_it(tmp_path, field, value):
    row = {"index": 1, "start": "2024-03-08 20:00", "title": "t", "prod": "p", "text": "", "duration": 3,
           "user_cnt": 100, field: value}
    with pytest.raises(InputError, match=field):
        load_pitches(write_pitches(tmp_path, [row], list(row)), numeric=("duration", "user_cnt"))
    with pytest.raises(FieldError) as err:
        check_pitch(make_pitch(**{field: value}))
    assert err.value.field == field


@pytest.mark.parametrize("items, kept", [
    ([[0, "袜子", 29.9], [1, "赠品", 0], [2, "围巾", -1]], 1),     # price <= 0 dropped
    ([[i, f"商品{i}", 10 + i] for i in range(12)], 10),          # the first 10 kept
    ([[True, "袜子", 29.9]], None),                              # a bool is no idx
    ([[0, "袜子", float("nan")]], None),                         # NaN is no price
    ([[0, "袜子"]], None),
])
def test_showcase_items_are_checked_as_the_showcase_loader_checks_them(tmp_path, items, kept):
    goods = write_goods(tmp_path, {"2024-03-08 20:00": items})
    if kept is None:
        with pytest.raises(InputError, match="expected \\[idx, name, price\\]"):
            load_showcase(goods)
        with pytest.raises(FieldError, match="expected \\[idx, name, price\\]"):
            check_pitch(make_pitch(showcase=items))
        return
    loaded = load_showcase(goods)["2024-03-08 20:00"]
    assert len(loaded) == kept and check_pitch(make_pitch(showcase=items)).items == tuple(loaded)


def test_a_pitch_index_is_a_hash_of_what_the_questions_show():
    base = check_pitch(make_pitch()).index
    assert base == check_pitch(make_pitch()).index and 0 <= base < 2**53
    assert base == check_pitch(make_pitch(duration=10, user_cnt=5)).index  # not shown to the personas
    for change in ({"title": "x"}, {"prod": "x"}, {"text": "x"}, {"start": "2024-03-08 20:01"},
                   {"showcase": [[0, "加厚保暖羊毛袜", 19.9]]}):
        assert check_pitch(make_pitch(**change)).index != base, change


def test_forecast_over_two_endpoints_declared_as_for_score(servers, model_dir, tmp_path):
    a, b = servers("sim-server", "--latency-ms", "20"), servers("sim-server", "--latency-ms", "20")
    f = tmp_path / "endpoints.toml"
    f.write_text("".join(f'[[endpoint]]\nname = "{n}"\nbase_url = "{s.url}"\nmax_concurrency = 4\n'
                         for n, s in (("a", a), ("b", b))))
    serve = servers("serve", "--model-dir", str(model_dir), "--run", str(tmp_path / "cache"), "--endpoints", str(f),
                    "--llm", "liveroom-sim", "--backoff", "0.05", key=KEY)
    status, got = call(serve.url + "/v1/forecast", make_pitch())
    assert status == 200 and got["requests_sent"] == 24, got
    sent = [sim_stats(s)["requests"] for s in (a, b)]
    assert sum(sent) == 24 and all(sent), sent  # each endpoint under its own limit of 4
    names = [json.loads(line)["endpoint"] for s in ("entry", "buy", "read")
             for line in (tmp_path / "cache" / f"{s}.jsonl").read_text().splitlines()]
    assert sorted(set(names)) == ["a", "b"] and len(names) == 24
    assert "2 endpoints (a, b)" in serve.stderr()
