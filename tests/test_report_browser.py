"""``egd report``'s HTML opened in a real browser: headless Chromium, driven over the DevTools protocol.

Every figure must load (``naturalWidth`` > 0, and the size of the PNG it embeds), the console must stay free of
errors, and a screenshot is saved.  Chromium is Debian's ``chromium`` package (.ci/run installs it where apt
works); without it the tests skip.  The protocol runs over ``--remote-debugging-pipe`` (NUL-separated JSON on file
descriptors 3 and 4), so the standard library is enough: no websocket client, no Playwright, no driver binary.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from test_report import _runs  # hand-made run directories with known curves

from egalitarian.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs chromium and sets EGD_NEED_CHROMIUM=1, so there a missing browser fails instead of skipping
if CHROMIUM is None and os.environ.get("EGD_NEED_CHROMIUM") == "1":
    raise RuntimeError("EGD_NEED_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install "
                                "chromium)")

IMAGES = """JSON.stringify([...document.images].map(i => ({alt: i.alt, complete: i.complete,
                                                         width: i.naturalWidth, height: i.naturalHeight})))"""


class Browser:
    """Headless Chromium and one page, over the DevTools protocol on a pipe.  ``errors`` collects what the console
    reports as an error: ``console.error``/``console.assert``, uncaught exceptions, and the browser's own log
    entries of level error (a resource that failed to load, a blocked request)."""

    def __init__(self, profile: Path, width: int = 1100, height: int = 800, timeout: float = 60.0) -> None:
        self.timeout, self.next_id, self.buffer, self.events = timeout, 0, b"", []
        to_chrome, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        # the browser reads commands on fd 3 and writes answers on fd 4: bash puts the pipes there (dash takes
        # single-digit descriptors only)
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{to_chrome} 4>&{from_chrome_w}', "bash", CHROMIUM,
                                      *flags], pass_fds=(to_chrome, from_chrome_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _message(self) -> dict:
        deadline = time.monotonic() + self.timeout  # a hang guard, not a performance check
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.from_chrome], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.from_chrome, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("chromium did not answer" if not ready else "chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._message())

    @property
    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append("console." + params["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                        for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                out.append("exception: " + params["exceptionDetails"].get("exception", {}).get("description", "?"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(f"log ({params['entry']['source']}): {params['entry']['text']}")
        return out

    def open(self, path: Path) -> list[dict]:
        """Load ``path``; return every ``<img>`` as the browser sees it (alt, complete, natural size)."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        got = self.call("Runtime.evaluate", session=True, expression=IMAGES, returnByValue=True)
        return json.loads(got["result"]["value"])

    def screenshot(self, path: Path) -> bytes:
        """The whole page (beyond the window) as PNG, written to ``path``."""
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        png = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png", clip=clip,
                                         captureBeyondViewport=True)["data"])
        path.write_bytes(png)
        return png

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)  # a hang guard: then killed
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk: the 8-byte signature, then length, "IHDR", width, height."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_every_figure_of_the_report_loads_without_console_errors(tmp_path, browser):
    out = tmp_path / "report"
    assert main(["report", str(_runs(tmp_path)), "--out", str(out)]) == 0
    images = browser.open(out / "report.html")
    pngs = {name: png_size((out / f"{name}.png").read_bytes()) for name in ("accuracy", "loss", "diag_lar")}
    assert len(images) == len(pngs), images
    for img in images:
        assert img["complete"] and img["width"] > 0, img  # decoded, not a broken-image icon
        # the size the browser decoded is the size of the PNG written beside the page
        assert (img["width"], img["height"]) == pngs[img["alt"].removesuffix(".png")], img
    assert browser.errors == []
    shot = browser.screenshot(tmp_path / "report.png")
    width, height = png_size(shot)
    assert width == 1100 - 15 or width == 1100  # the window, less a scrollbar where one is drawn
    assert height > 800  # the whole page, not the window: three figures and a table do not fit in it


def test_the_check_sees_a_broken_figure_and_console_errors(tmp_path, browser):
    """The same checks on a page with a corrupt image, a console.error and an uncaught exception: all are seen."""
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><body><img alt="bad" src="data:image/png;base64,iVBORw0KGgoAAAA">'
                    "<script>console.error('drawn wrong'); throw new Error('boom')</script></body></html>")
    images = browser.open(page)
    assert images == [{"alt": "bad", "complete": True, "width": 0, "height": 0}]
    errors = browser.errors
    assert any("drawn wrong" in e for e in errors) and any("boom" in e for e in errors), errors
