"""The page in a real browser: headless Chromium drives the form against bin/serve.

Chromium is driven over the DevTools protocol (a websocket, through aiohttp:
no selenium, no driver). The test types two pitches into the two forms,
presses the buttons as a user does, reads what the page shows and checks it
against the API's answer for the same pitches (which are then in the cache:
the page sent exactly what the API takes). The service runs with a token
(``--token-env``): the page asks for it, as a user gives it, before it can
forecast. A screenshot of the page is saved
(``$LIVEROOM_ARTIFACTS`` or the test's temporary directory) and its path
printed. Skipped without Chromium, unless ``LIVEROOM_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kit import SERVE_KEY as KEY
from kit import call, make_pitch, serve_flags, sim_stats, start_server

pytestmark = pytest.mark.browser

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-port=0", "--window-size=1440,1000")
TARGETS = ("log_gmv", "log_deal_order_cnt", "log_live_deal_user_cnt", "log_watch_user_cnt")
PITCH_A = make_pitch(1)
PITCH_B = make_pitch(2, text="库存只有最后两百件，错过今天就要恢复原价，喜欢的家人们抓紧下单。", user_cnt=30000,
                     showcase=[[0, "加厚保暖羊毛袜", 19.9], [1, "羊绒围巾", 199], [2, "赠品小样", 0]])


def chromium() -> str:
    """The browser to drive, or skip (fail, with LIVEROOM_REQUIRE_BROWSER=1) when there is none."""
    for candidate in (os.environ.get("LIVEROOM_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.environ.get("LIVEROOM_REQUIRE_BROWSER") == "1":
        pytest.fail("LIVEROOM_REQUIRE_BROWSER=1 but no Chromium found (apt-get install -y chromium)")
    pytest.skip("no Chromium installed (apt-get install -y chromium); LIVEROOM_REQUIRE_BROWSER=1 fails instead")


class Page:
    """One tab of a headless Chromium, over the DevTools protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession,
                 ws: aiohttp.ClientWebSocketResponse) -> None:
        self.proc, self.session, self.ws = proc, session, ws
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, binary: str, profile: Path) -> Page:
        proc = await asyncio.create_subprocess_exec(binary, *FLAGS, f"--user-data-dir={profile}", "about:blank",
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        seen: list[str] = []
        while not (m := re.search(r"DevTools listening on (ws://\S+)", seen[-1] if seen else "")):
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, "chromium exited:\n" + "".join(seen)
            seen.append(line.decode(errors="replace"))
        asyncio.create_task(proc.stderr.read())  # keep draining, or a full pipe stalls the browser
        origin = m.group(1).split("/devtools/")[0].replace("ws://", "http://")
        session = aiohttp.ClientSession()
        async with session.get(origin + "/json/list") as r:
            tab = next(t for t in await r.json() if t["type"] == "page")
        ws = await session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0)
        return cls(proc, session, ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        fut = self._waiting[self._next] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps({"id": self._next, "method": method, "params": params}))
        answer = await asyncio.wait_for(fut, 60)
        assert "error" not in answer, (method, answer)
        return answer["result"]

    async def js(self, expression: str) -> Any:
        """The value of a JS expression (awaited when it is a promise)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float = 60) -> Any:
        """Poll until ``expression`` is truthy; its value."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not (value := await self.js(expression)):
            assert loop.time() < end, f"timed out waiting for {expression}"
            await asyncio.sleep(0.1)
        return value

    async def type(self, selector: str, text: str) -> None:
        """Replace a field's text as a user does: focus, select all, type."""
        await self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.focus(); e.select(); })()")
        await self.send("Input.insertText", text=text)

    async def click(self, selector: str) -> None:
        """A left click in the middle of an element."""
        box = await self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    async def screenshot(self, path: Path) -> None:
        """The whole page, top to bottom, as a PNG."""
        height = await self.js("document.documentElement.scrollHeight")
        await self.send("Emulation.setDeviceMetricsOverride", width=1440, height=int(height),
                        deviceScaleFactor=1, mobile=False)
        await self.js("window.scrollTo(0, 0)")
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.session.close()
        if self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 20)


async def fill(page: Page, column: str, pitch: dict[str, Any]) -> None:
    """Type ``pitch`` into a column's form; the showcase as ``name, price`` lines."""
    for name in ("start", "title", "prod", "text", "duration", "user_cnt"):
        await page.type(f"#{column} [name={name}]", str(pitch[name]))
    await page.type(f"#{column} [name=showcase]", "\n".join(f"{n}, {p:g}" for _, n, p in pitch["showcase"]))


SHOWN = """(() => {
  const col = document.getElementById(%s);
  const text = (sel) => col.querySelector(sel).textContent;
  const bars = (chart) => Object.fromEntries([...col.querySelectorAll(`.chart.${chart} .bar-row`)].map((row) =>
    [row.dataset.persona, Object.fromEntries([...row.querySelectorAll('.bar-value')].map((b) =>
      [b.dataset.series, b.textContent]))]));
  return {counts: Object.fromEntries(%s.map((t) => [t, text(`[data-target="${t}"]`)])),
          logs: Object.fromEntries(%s.map((t) => [t, text(`[data-log="${t}"]`)])),
          shares: bars('shares'), scores: bars('scores'), meta: text('.meta')};
})()"""


def agrees(shown: str, value: float, scale: float = 1.0) -> bool:
    """A number as the page shows it ("1,234", "12.3%", "4") is ``value * scale`` to its last digit."""
    digits = shown.replace(",", "").rstrip("%").replace("−", "-")
    places = len(digits.split(".")[1]) if "." in digits else 0
    return abs(float(digits) - value * scale) <= 0.5 * 10 ** -places + 1e-9 * abs(value * scale)


def check_shown(shown: dict[str, Any], api: dict[str, Any]) -> None:
    pred = api["prediction"]
    for t in TARGETS:
        assert agrees(shown["logs"][t], pred[t]), (t, shown["logs"][t], pred[t])
        assert agrees(shown["counts"][t], math.expm1(pred[t])), (t, shown["counts"][t], pred[t])
    assert list(shown["shares"]) == list(pred["watch_share"])
    for k, bars in shown["shares"].items():
        assert agrees(bars["watch"], pred["watch_share"][k], 100) and agrees(bars["pay"], pred["pay_share"][k], 100)
    for k, bars in shown["scores"].items():
        assert {s: float(v) for s, v in bars.items()} == pytest.approx({s: api["scores"][s][k] for s in bars}, abs=5e-3)
    assert f"pitch {api['index']:013x}" in shown["meta"]


@pytest.fixture(scope="module")
def browser() -> str:
    """The Chromium binary, looked for before anything is trained or started."""
    return chromium()


TOKEN_ENV, TOKEN = "LIVEROOM_PAGE_TOKEN", "page-token-4b8e1f"


@pytest.fixture
def service(browser: str, model_dir: Path, tmp_path: Path):
    """(simulator, bin/serve with a token) for one test, stopped after it."""
    sim = start_server("sim-server", (), tmp_path / "sim.log", None)
    os.environ[TOKEN_ENV] = TOKEN
    try:
        serve = start_server("serve", serve_flags(sim, model_dir, tmp_path / "cache", "--token-env", TOKEN_ENV),
                             tmp_path / "serve.log", KEY)
    except BaseException:
        sim.stop()
        raise
    finally:
        del os.environ[TOKEN_ENV]
    yield sim, serve
    assert serve.stop() == 0 and sim.stop() == 0, serve.stderr()


async def test_the_page_shows_what_the_api_answers(browser, service, tmp_path, capsys):
    sim, serve = service
    page = await Page.open(browser, tmp_path / "profile")
    try:
        await page.send("Page.enable")
        await page.send("Page.navigate", url=serve.url + "/")
        await page.until("window.liveroomReady === true")
        # the API answers 401 without the token: the page asks for it
        assert not await page.js("document.getElementById('token-form').hidden")
        assert "token" in await page.js("document.getElementById('model-line').textContent")
        await page.type("#token-form [name=token]", TOKEN)
        await page.click("#token-form button")
        await page.until("document.getElementById('model-line').textContent.includes('best epoch')")
        assert await page.js("document.getElementById('token-form').hidden")

        await fill(page, "A", PITCH_A)
        await page.click("#A .go")
        assert await page.until("['done', 'error'].includes(document.getElementById('A').dataset.state) "
                                "&& document.getElementById('A').dataset.state") == "done"
        # a bad start: the field is marked, nothing is sent ...
        await fill(page, "B", {**PITCH_B, "start": "2024-13-45 20:00"})
        await page.click("#B .go")
        assert await page.until("document.getElementById('B').dataset.state === 'error'")
        error = await page.js("document.querySelector('#B .form-error').textContent")
        assert error.startswith("start: ") and "YYYY-MM-DD HH:MM" in error
        assert await page.js("document.querySelector('#B [name=start]').classList.contains('bad')")
        # ... and once put right, B is forecast beside A
        await page.type("#B [name=start]", PITCH_B["start"])
        await page.click("#B .go")
        assert await page.until("document.getElementById('B').dataset.state === 'done'")
        assert sim_stats(sim)["requests"] == 48
        shown = {c: await page.js(SHOWN % (json.dumps(c), json.dumps(TARGETS), json.dumps(TARGETS))) for c in "AB"}
        assert not await page.js("document.getElementById('compare').hidden")
        assert len(await page.js("[...document.querySelectorAll('#compare-row .delta')].map(d => d.textContent)")) == 4

        out = Path(os.environ.get("LIVEROOM_ARTIFACTS") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        shot = out / "serve-page.png"
        await page.screenshot(shot)
    finally:
        await page.close()

    for column, pitch in (("A", PITCH_A), ("B", PITCH_B)):
        status, api = call(serve.url + "/v1/forecast", pitch, token=TOKEN)
        assert status == 200 and api["requests_sent"] == 0, api  # the page asked exactly this pitch
        check_shown(shown[column], api)
    assert sim_stats(sim)["requests"] == 48
    assert KEY not in serve.stderr() and TOKEN not in serve.stderr()
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with capsys.disabled():
        print(f"\nscreenshot of the forecast page: {shot}")
