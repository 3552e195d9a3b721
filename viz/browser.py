"""Screenshots of the served web viewer with headless Chromium (tests, README image).

Chromium is driven over the DevTools protocol: the web viewer is a wasm app that
keeps loading after the page's load event, so we poll screenshots until the 3D
view shows something (or time runs out). Needs Debian's ``chromium`` package.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
from websockets.sync.client import connect

from viz.session import LOOPBACK, free_port

# Software WebGL (no GPU here) and no network beyond loopback.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--mute-audio",
    "--hide-scrollbars",
)


# Where the blueprint puts the 3D view (left three quarters, top four fifths), minus its title bar.
SCENE_BOX = (0.02, 0.08, 0.73, 0.76)
IMAGE_BOX = (0.77, 0.10, 0.98, 0.36)  # the current frame's image, top right


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def region_variety(image: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, float]:
    """(std of grey values, fraction of coloured pixels) in ``box`` of a screenshot.

    ``image``: uint8 [H, W, 3]; ``box``: (x0, y0, x1, y1) as fractions of the width/height.
    The viewer's own chrome (background, grid, loading and welcome screens, text) is
    grey, so "coloured" (max - min channel > 40) pixels come from logged data.
    """
    H, W = image.shape[:2]
    x0, y0, x1, y1 = box
    roi = image[int(y0 * H):int(y1 * H), int(x0 * W):int(x1 * W)].astype(np.float32)
    if roi.size == 0:
        raise ValueError(f"screenshot region {box} is empty in an image of {W}x{H}")
    chroma = roi.max(axis=2) - roi.min(axis=2)
    return float(roi.mean(axis=2).std()), float((chroma > 40).mean())


def shows_data(image: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether ``box`` of a viewer screenshot shows logged data rather than an empty panel."""
    std, coloured = region_variety(image, box)
    return std > 8.0 and coloured > 0.01


class _DevTools:
    def __init__(self, ws, deadline: float) -> None:
        self._ws = ws  # an open websockets.sync connection to one page
        self._ids = itertools.count(1)
        self._deadline = deadline  # a software-rendered screenshot can take a minute on a busy machine

    def call(self, method: str, **params) -> dict:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv(timeout=max(10.0, self._deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"Chromium DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})


def _page_socket(port: int, deadline: float) -> str:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/json/list", timeout=2) as resp:
                pages = [t for t in json.load(resp) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"headless Chromium did not open its DevTools port {port}")


def capture_viewer(
    url: str,
    out_png: Path | str,
    size: tuple[int, int] = (1280, 800),
    timeout: float = 120.0,
    settle: float = 8.0,
    box: tuple[float, float, float, float] = SCENE_BOX,
) -> np.ndarray:
    """Open ``url`` in headless Chromium, wait until ``box`` shows content, save and return the RGB screenshot.

    Polls every 2 s; returns once the region has shown data in consecutive screenshots
    for at least ``settle`` s (the viewer re-lays itself out while data streams in).
    Returns the last screenshot when ``timeout`` passes.
    Software WebGL is slow: one screenshot can take seconds on a busy machine.
    """
    exe = chromium_binary()
    if exe is None:
        raise RuntimeError("headless screenshots need Chromium (Debian package 'chromium')")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="stream4d-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: renderer and GPU processes stop with it
        )
        try:
            deadline = time.monotonic() + timeout
            with connect(_page_socket(port, deadline), max_size=64 * 2**20, open_timeout=10) as ws:
                tools = _DevTools(ws, deadline)
                tools.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1],
                           deviceScaleFactor=1, mobile=False)
                tools.call("Page.navigate", url=url)
                shot, streak, seen_at = None, 0, None
                while time.monotonic() < deadline:
                    time.sleep(2.0)
                    shot = _screenshot(tools)
                    if shows_data(shot, box):
                        streak += 1
                        seen_at = seen_at or time.monotonic()
                    else:  # e.g. the default layout before the blueprint arrived
                        streak, seen_at = 0, None
                    if streak >= 2 and time.monotonic() - seen_at >= settle:
                        break
        finally:
            _stop_group(proc)
    if shot is None:
        raise RuntimeError(f"no screenshot of {url} within {timeout:.0f} s")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR))
    return shot


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _screenshot(tools: _DevTools) -> np.ndarray:
    data = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
