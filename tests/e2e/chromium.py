"""Headless Chromium (Debian's /usr/bin/chromium, `make browser`) driven over the DevTools protocol.

No browser download and no new dependency: Chromium listens on a loopback debugging port and
this talks to its page over a websocket (`websockets`, which Prefect depends on). Only what the
UI test needs: open a URL, wait with a bound for the rendered text, save a PNG once the page has
stopped changing. `close()` (also on leaving `with`) ends every process the browser started.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

EXECUTABLE = os.environ.get("DBTFLOW_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
    "--lang=en-US",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class BrowserError(AssertionError):
    pass


_PRCTL = ctypes.CDLL(None).prctl  # looked up here: the forked child only calls it


def _die_with_parent() -> None:  # in the child before exec: if pytest is killed, so is chromium
    _PRCTL(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


class Chromium:
    def __init__(self, width: int = 1440, height: int = 900, start_timeout: float = 120) -> None:
        if not Path(EXECUTABLE).exists():
            raise BrowserError(f"{EXECUTABLE} not found: `make browser` installs Debian's chromium")
        self.root = Path(tempfile.mkdtemp(prefix="dbtflow-chromium-"))
        self.profile, self.log = self.root / "profile", self.root / "chromium.log"
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._events: list[dict[str, Any]] = []
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [EXECUTABLE, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TZ": "UTC", "LANG": "en_US.UTF-8"},
                start_new_session=True,  # its own process group, which close() ends with its helpers
                preexec_fn=_die_with_parent,
            )
        try:
            self._ws = connect(self._page_websocket(start_timeout), max_size=None, open_timeout=60)
            self.call("Page.enable")
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            self.call("Emulation.setDeviceMetricsOverride", metrics)
            self.call("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
            self.call("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _page_websocket(self, timeout: float) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium opened no debugging port in {timeout} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        while True:
            with contextlib.suppress(httpx.HTTPError):
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                pages = [t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"]
                if pages:
                    return str(pages[0])
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium has no page target after {timeout} s")
            time.sleep(0.2)

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        assert self._ws is not None, "the browser is closed"
        try:
            return dict(json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01))))
        except TimeoutError:
            return None

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """One DevTools command on the page; events arriving meanwhile are kept for `wait_event`."""
        assert self._ws is not None, "the browser is closed"
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._receive(deadline)
            if message is None:
                continue
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self._events.append(message)
        raise BrowserError(f"{method}: no answer from chromium in {timeout} s")

    def wait_event(self, method: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event["method"] == method:
                    self._events.remove(event)
                    return dict(event.get("params", {}))
            if time.monotonic() > deadline:
                raise BrowserError(f"no {method} from chromium in {timeout} s")
            message = self._receive(deadline)
            if message is not None and "method" in message:
                self._events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 120) -> None:
        """Navigate and wait for the document's load event (an SPA renders its data later: `wait_for_text`)."""
        self._events.clear()
        navigated = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def wait_for_text(self, needles: Iterable[str], timeout: float = 180) -> str:
        """Poll the rendered text until it holds every needle: the text, or an error naming what is missing."""
        needles = list(needles)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise BrowserError(f"after {timeout} s the page lacks {missing}; its text:\n{text[:3000]}")
            time.sleep(0.5)

    def screenshot(self, path: Path, timeout: float = 120, still: float = 2.0) -> Path:
        """The viewport as a PNG, once it has looked the same for `still` seconds (canvas graphs draw late)."""
        deadline = time.monotonic() + timeout
        last, since = b"", time.monotonic()
        while True:
            shot = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"}, timeout=timeout)["data"])
            if shot != last:
                last, since = shot, time.monotonic()
            elif time.monotonic() - since >= still:
                break
            if time.monotonic() > deadline:
                raise BrowserError(f"the page was still changing after {timeout} s: {self.evaluate('location.href')}")
            time.sleep(0.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(last)
        return path

    def pids(self) -> list[int]:
        """The live processes of this browser: its process group, and any process naming its profile."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                cmdline = (entry / "cmdline").read_bytes()
                state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
                if state != "Z" and (int(pgrp) == self.process.pid or str(self.profile).encode() in cmdline):
                    found.append(int(entry.name))
        return found

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.send(json.dumps({"id": next(self._ids), "method": "Browser.close"}))
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ws = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        for sig in (signal.SIGTERM, signal.SIGKILL):  # whatever Browser.close left behind
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
