"""Errors as documented: every refusal is ``{"error": {...}}`` JSON, malformed HTTP is one log line,
and a request held half-sent is closed (raw sockets against a real bin/serve)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from kit import host_of, make_pitch, raw, serve_over


@pytest.fixture
def serve(servers, model_dir, tmp_path):
    sim = servers("sim-server")
    return serve_over(servers, sim, model_dir, tmp_path / "cache", "--header-timeout", "1", "--body-timeout", "1")


def connect(url: str) -> socket.socket:
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    return s


def read_all(s: socket.socket) -> bytes:
    """What the server sends until it closes the connection (a 30 s socket timeout fails the test)."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_every_error_is_json(serve):
    host = {"Host": host_of(serve.url)}
    json_post = {**host, "Content-Type": "application/json"}
    cases = [
        (("GET", "/nope", host, None), 404),
        (("GET", "/page/secret.txt", host, None), 404),
        (("DELETE", "/v1/forecast", host, None), 405),
        (("POST", "/v1/forecast", json_post, b"{" + b" " * (5 << 20) + b"}"), 413),
        (("POST", "/v1/forecast", json_post, b"{not json"), 400),
    ]
    for (method, path, headers, body), want in cases:
        status, got_headers, got = raw(serve.url, method, path, headers, body)
        assert status == want, (path, status, got)
        assert got_headers["content-type"].startswith("application/json"), got_headers
        assert isinstance(got, dict) and isinstance(got["error"]["message"], str), got
        if want == 405:
            assert "POST" in got_headers["allow"]


def test_a_long_field_name_is_cut_in_the_reply(serve):
    name = "x" * 1_000_000
    body = json.dumps(make_pitch(**{name: 1})).encode()
    status, _, got = raw(serve.url, "POST", "/v1/forecast", {"Host": host_of(serve.url),
                                                             "Content-Type": "application/json"}, body)
    assert status == 400 and "is not a pitch field" in got["error"]["message"]
    assert got["error"]["field"].startswith("xxx") and len(got["error"]["field"]) <= 41
    assert len(json.dumps(got)) < 1000


@pytest.mark.parametrize("sent", [
    b"GARBAGE\r\n\r\n",                                                       # a bad request line
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",  # a header over 8 KB
    b"POST /v1/forecast HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{\"start\"",                                # hung up mid-body
])
def test_malformed_http_is_one_log_line(serve, sent):
    before = serve.stderr().count("\n")
    s = connect(serve.url)
    s.sendall(sent)
    if b"Content-Length: 1000" in sent:
        s.close()  # the client hangs up mid-body
    else:
        reply = read_all(s)
        assert reply.startswith((b"HTTP/1.0 4", b"HTTP/1.1 4")), reply[:200]
        s.close()
    status, _, _ = raw(serve.url, "GET", "/healthz", {"Host": host_of(serve.url)})  # still serving
    assert status == 200
    # the hang-up is noticed only when the body read gives up: wait for it, or for the line
    s = connect(serve.url)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    read_all(s)
    s.close()
    log = serve.stderr()
    assert "Traceback" not in log, log
    assert log.count("\n") - before <= 1, log.splitlines()[before:]


def test_a_request_held_half_sent_is_closed(serve):
    # headers that never end: the connection is closed after --header-timeout
    s = connect(serve.url)
    s.sendall(b"POST /v1/forecast HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert read_all(s) == b""
    s.close()
    # a body that never ends: 408 after --body-timeout, then closed
    s = connect(serve.url)
    s.sendall(b"POST /v1/forecast HTTP/1.1\r\nHost: " + host_of(serve.url).encode()
              + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"start\"")
    reply = read_all(s)
    s.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply[:300]
    assert "did not arrive" in json.loads(body)["error"]["message"]
    assert "Traceback" not in serve.stderr()
