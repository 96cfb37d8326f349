"""Who can spend the key through bin/serve: raw HTTP against real bin/serve and bin/sim-server processes.

Each test sends what a browser or a careless client would (a cross-site form
post, a rebound DNS name, no token, too many new pitches) with headers set by
hand, and counts on the simulator that nothing was asked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

from kit import BIN, call, host_of, make_pitch, raw, serve_over, sim_stats
from kit import SERVE_KEY as KEY

TOKEN = "tok-7c1d9e0b55a04f2e"


def test_a_cross_site_form_post_is_refused_and_asks_nothing(servers, model_dir, tmp_path):
    sim = servers("sim-server")
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache")
    body = json.dumps(make_pitch()).encode()
    # what any web page can make a browser send without asking first
    status, _, got = raw(serve.url, "POST", "/v1/forecast", {"Host": host_of(serve.url), "Content-Type": "text/plain",
                                                             "Origin": "http://evil.example"}, body)
    assert status == 403 and "origin" in got["error"]["message"], got
    # the same body from a client that is no browser, still not JSON: 415
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, headers, got = raw(serve.url, "POST", "/v1/forecast", {"Host": host_of(serve.url),
                                                                       "Content-Type": ctype}, body)
        assert status == 415 and "application/json" in got["error"]["message"], got
        assert headers["content-type"].startswith("application/json")
    # the browser's preflight of a JSON post from that page is refused as well
    status, _, got = raw(serve.url, "OPTIONS", "/v1/forecast", {"Host": host_of(serve.url),
                                                                "Origin": "http://evil.example"})
    assert status == 403, got
    assert sim_stats(sim)["requests"] == 0
    # the page's own origin and JSON: answered
    status, _, got = raw(serve.url, "POST", "/v1/forecast", {"Host": host_of(serve.url), "Origin": serve.url,
                                                             "Content-Type": "application/json; charset=utf-8"}, body)
    assert status == 200 and got["requests_sent"] == 24, got


def test_a_host_not_served_is_refused(servers, model_dir, tmp_path):
    sim = servers("sim-server")
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache")
    for path in ("/v1/model", "/", "/metrics"):
        status, _, got = raw(serve.url, "GET", path, {"Host": "evil.example"})
        assert status == 421 and "--allowed-host" in got["error"]["message"], (path, got)
        assert str(model_dir) not in json.dumps(got)
    status, _, got = raw(serve.url, "GET", "/healthz", {"Host": "10.1.2.3:8080"})  # a load balancer's probe
    assert status == 200 and got["status"] == "ok"
    status, _, got = raw(serve.url, "GET", "/v1/model", {"Host": "localhost:" + str(urlsplit(serve.url).port)})
    assert status == 200 and got["model_dir"] == str(model_dir)
    assert serve.stop() == 0
    named = serve_over(servers, sim, model_dir, tmp_path / "cache", "--allowed-host", "forecast.example.org")
    status, _, got = raw(named.url, "GET", "/v1/model", {"Host": "forecast.example.org"})
    assert status == 200, got
    status, _, got = raw(named.url, "GET", "/v1/model", {"Host": "evil.example"})
    assert status == 421, got


def test_the_token_is_required_on_the_api_and_not_on_the_page(servers, model_dir, tmp_path):
    sim = servers("sim-server")
    env_name = "LIVEROOM_TEST_TOKEN"
    os.environ[env_name] = TOKEN
    try:
        serve = serve_over(servers, sim, model_dir, tmp_path / "cache", "--token-env", env_name)
    finally:
        del os.environ[env_name]
    host = {"Host": host_of(serve.url)}
    body = json.dumps(make_pitch()).encode()
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, headers, got = raw(serve.url, "POST", "/v1/forecast",
                                   {**host, **auth, "Content-Type": "application/json"}, body)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), got
        assert "Authorization: Bearer" in got["error"]["message"]
    status, _, _ = raw(serve.url, "GET", "/metrics", host)
    assert status == 401
    assert sim_stats(sim)["requests"] == 0
    status, _, page = raw(serve.url, "GET", "/", host)
    assert status == 200 and 'id="token-form"' in page
    status, _, got = raw(serve.url, "POST", "/v1/forecast", {**host, "Authorization": f"Bearer {TOKEN}",
                                                             "Content-Type": "application/json"}, body)
    assert status == 200 and got["requests_sent"] == 24, got
    assert TOKEN not in serve.stderr() and KEY not in serve.stderr()


def test_serving_other_machines_needs_a_token(model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    base = [sys.executable, str(BIN / "serve"), "--model", str(model_dir), "--cache", str(tmp_path / "c"),
            "--base-url", "http://127.0.0.1:9/v1", "--port", "0"]
    for flags, words in ((["--host", "0.0.0.0"], "--token-env"),
                         (["--token-env", "LIVEROOM_UNSET_TOKEN"], "$LIVEROOM_UNSET_TOKEN is not set")):
        p = subprocess.run([*base, *flags], capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 2 and "listening" not in p.stdout and "Traceback" not in p.stderr, p.stderr
        assert words in p.stderr.strip().splitlines()[-1], p.stderr


def test_new_pitches_per_client_are_limited_and_cached_ones_are_free(servers, model_dir, tmp_path):
    sim = servers("sim-server")
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache", "--pitches-per-minute", "2")
    for n in (0, 1):
        status, got = call(serve.url + "/v1/forecast", make_pitch(n))
        assert status == 200 and got["requests_sent"] == 24
    body = json.dumps(make_pitch(2)).encode()
    status, headers, got = raw(serve.url, "POST", "/v1/forecast",
                               {"Host": host_of(serve.url), "Content-Type": "application/json"}, body)
    assert status == 429 and "2 new pitches a minute" in got["error"]["message"], got
    assert 1 <= int(headers["retry-after"]) <= 60
    status, got = call(serve.url + "/v1/forecast:batch", [make_pitch(3), make_pitch(4)])
    assert status == 429, got
    assert sim_stats(sim)["requests"] == 48
    status, got = call(serve.url + "/v1/forecast:batch", [make_pitch(0), make_pitch(1, duration=9)])
    assert status == 200 and got["requests_sent"] == 0  # in the cache: free
    assert "429" in serve.stderr()

