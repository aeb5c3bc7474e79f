"""A real headless browser for tests: Debian's ``chromium``, driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol commands on file
descriptor 3 and writes replies and events on 4, as JSON messages ending in a NUL byte
(https://chromedevtools.github.io/devtools-protocol/). That needs nothing but the standard
library — no WebSocket client, no browser download — and no port to race for. The flags keep the
browser off the network and out of the user's profile: this machine (and CI) has no internet.

What a page is judged by, as a person would see it: every request it made succeeded (no failed
load, no HTTP status >= 400), the console has no error and no script threw, every ``<img>`` decoded,
and the screenshot is not blank.
"""
from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
#: a laptop's window
WIDTH, HEIGHT = 1280, 800


def chromium_path() -> str | None:
    """The Debian ``chromium`` launcher, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageReport:
    """What loading a page showed. ``problems`` lists every failure, one line each."""

    url: str
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Browser:
    """``with Browser() as b: report = b.open(url)``: one tab of a fresh headless chromium."""

    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict] = []

    # --------------------------------------------------------------- process and protocol
    def __enter__(self) -> "Browser":
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
        self._profile = tempfile.mkdtemp(prefix="hyp2-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds():  # in the child: the browser's ends become descriptors 3 and 4
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self._proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", f"--window-size={WIDTH},{HEIGHT}",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire_fds, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close", session=False)
        except Exception:  # noqa: BLE001 - closing a browser that already died
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"the browser exited (status {self._proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send a command (to the tab unless ``session=False``) and return its result."""
        self._next_id += 1
        mid = self._next_id
        message: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session and hasattr(self, "_session"):
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == mid:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    send = call

    def _wait_for(self, method: str, deadline: float) -> dict:
        for i, event in enumerate(self._events):
            if event["method"] == method:
                return self._events.pop(i)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            if "method" in event:
                self._events.append(event)

    # --------------------------------------------------------------- pages
    def open(self, url: str) -> PageReport:
        """Load ``url`` and wait for its load event and for its requests to settle."""
        self._events.clear()
        self.call("Page.navigate", {"url": url})
        return self._settle(url)

    def submit(self, expression: str, url: str = "") -> PageReport:
        """Run ``expression`` (which navigates, e.g. a form's submit) and judge the page it loads."""
        self._events.clear()
        self.evaluate(expression)
        return self._settle(url or "(after submit)")

    def _settle(self, url: str) -> PageReport:
        deadline = time.monotonic() + self.timeout
        self._wait_for("Page.loadEventFired", deadline)
        # late requests (none expected from our pages) get a moment to show up
        quiet_until = time.monotonic() + 0.3
        while time.monotonic() < quiet_until:
            try:
                self._events.append(self._read_message(quiet_until))
            except TimeoutError:
                break
        return self._judge(url)

    def _judge(self, url: str) -> PageReport:
        report = PageReport(url)
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                report.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                report.problems.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                report.problems.append(f"HTTP {params['response']['status']}: {params['response']['url'][:200]}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.problems.append("console error: " + " ".join(str(a.get("value", a.get("description")))
                                                                      for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                report.problems.append(f"script error: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                report.problems.append(f"browser log: {params['entry'].get('text')}")
        self._events.clear()
        return report

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def broken_images(self) -> list[str]:
        """The ``src`` (shortened) of every ``<img>`` that did not decode."""
        return self.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                             ".map(i => i.src.slice(0, 120))")

    def set_file(self, selector: str, path: str) -> None:
        """Choose ``path`` in the file input ``selector``, as a user picking a file would."""
        node = self.call("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"})
        self.call("DOM.setFileInputFiles", {"files": [path], "objectId": node["result"]["objectId"]})

    def screenshot(self, full_page: bool = True) -> bytes:
        """PNG of the page (the whole page, or the laptop-sized viewport)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate("[document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": min(height, 8000), "scale": 1})
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])


def is_blank(png: bytes) -> bool:
    """True when a screenshot is one flat colour (nothing rendered)."""
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as img:
        stat = ImageStat.Stat(img.convert("L"))
    return stat.stddev[0] < 2.0
