"""The kit's chat-completions server (kit.Server): it answers, goes down (connections refused) and comes back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kit import GOOD, MODEL, Server


def test_the_kit_serves_and_goes_down_and_up(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    srv = Server()
    try:
        def post() -> dict[str, Any]:
            req = urllib.request.Request(srv.url + "/chat/completions", data=b'{"model": "m"}', method="POST")
            with urllib.request.urlopen(req, timeout=5) as r:
                return dict(json.load(r))

        assert post()["choices"][0]["message"]["content"] == GOOD
        srv.down()
        try:
            post()
            raise AssertionError("a server that is down answered")
        except urllib.error.URLError as e:
            assert "refused" in str(e.reason).lower()
        srv.up()
        assert post()["model"] == MODEL and srv.requests == 2
    finally:
        srv.stop()
