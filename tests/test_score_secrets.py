"""No secret on disk or in output (issue row F7): a server that echoes every credential it gets.

The key, the URL's password, any Authorization value (Basic or Bearer) and
``user:pass@`` are masked out of everything written or printed, reply text
included; credentials in the base URL become the Authorization header.
"""

from __future__ import annotations

import base64
from pathlib import Path

from aiohttp import web

from kit import Server, completion, make_inputs, records, score

KEY = "sk-echo-0123456789abcdef"
USER, PASSWORD = "alice", "s3cret-pw-42"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


_count: list[int] = []


async def echo(request: web.Request, body: dict) -> web.StreamResponse:
    """Every other request refused with every credential in the error, the rest answered with them in the reply."""
    _count.append(1)
    auth = request.headers.get("Authorization", "")
    said = (f"you sent Authorization: {auth}; decoded {base64.b64decode(auth.split()[-1]).decode(errors='replace')}"
            f" from http://{USER}:{PASSWORD}@127.0.0.1/v1" if auth.startswith("Basic") else
            f"you sent Authorization: {auth} (key {auth.removeprefix('Bearer ')})")
    if len(_count) % 2:
        return web.json_response({"error": {"message": said, "type": "invalid_request_error"}}, status=400)
    reason = said.replace('"', "'")
    return web.json_response(completion(f'{{"want_to_enter": 3, "impact": 3, "reason": "{reason}"}}'))


def everything_written(run: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file())


def test_url_credentials_become_the_header_and_are_never_written_or_shown(tmp_path):
    pitches, goods = make_inputs(tmp_path, 2)
    srv = Server(echo)
    run = tmp_path / "run"
    try:
        url = srv.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        p = score(pitches, goods, run, url, "--stages", "entry,read")
        assert p.returncode == 1, p.stderr  # the refused half failed, as requests
        assert {h["Authorization"] for h in srv.headers} == {f"Basic {TOKEN}"}
        recs = records(run)
        assert len(recs) == 32 and {r["status"] for r in recs} == {"ok", "error"}
        on_disk = everything_written(run) + p.stdout.encode() + p.stderr.encode()
        for secret in (PASSWORD, TOKEN, f"{USER}:{PASSWORD}"):
            assert secret.encode() not in on_disk, secret
        assert b"Authorization: Basic ***" in on_disk and b"http://***@127.0.0.1" in on_disk
        manifest = (run / "manifest.json").read_text()
        assert f'"endpoint": "http://127.0.0.1:{srv.port}/v1"' in manifest
    finally:
        srv.stop()


def test_the_key_is_never_written_even_when_a_reply_holds_it(tmp_path):
    pitches, goods = make_inputs(tmp_path, 2)
    srv = Server(echo)
    run = tmp_path / "run"
    try:
        p = score(pitches, goods, run, srv.url, "--stages", "entry,read", key=KEY)
        assert p.returncode == 1, p.stderr
        assert {h["Authorization"] for h in srv.headers} == {f"Bearer {KEY}"}
        ok = [r for r in records(run) if r["status"] == "ok"]
        assert ok and all("Authorization: Bearer ***" in r["reply"] and "(key ***)" in r["reply"] for r in ok)
        on_disk = everything_written(run) + p.stdout.encode() + p.stderr.encode()
        assert KEY.encode() not in on_disk and b"0123456789abcdef" not in on_disk
    finally:
        srv.stop()
