"""Server memory under the attacks of issue 15: huge headers, big JSON bodies, big live frames, big uploads.

Starts ``stream4d serve`` (default settings, loopback, one worker) from ``--code`` (default: this
checkout), afresh for each attack, runs one small job (so the baseline includes the loaded
pipeline), then the attack, while sampling the server's RSS every 20 ms and timing
``GET /health``, and prints one table row per attack: RSS before, peak, after, the peak's growth,
the slowest ``/health`` during the attack, and what the server answered.

    PYTHONPATH=. python bench/bench_service_limits.py --write-docs
    PYTHONPATH=. python bench/bench_service_limits.py --code /path/to/old/checkout --legacy

``--legacy`` runs a checkout whose ``serve`` lacks the new flags (only the defaults are used).
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import websockets.sync.client as ws_client

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import machine_info, markdown_table, write_docs_section  # noqa: E402
from stream4d.testdata import SHARED_DATA, png_of_black  # noqa: E402

MB = 2**20
# The model at 128 px in windows of 8, no splats: for the warm-up and the uploads, whose memory is
# the decoded frames', not the model's.
SMALL_MODEL = {"viewer": False, "resolution": 128, "window": 8, "overlap": 2, "gaussians": False}


class Server:
    def __init__(self, code: Path, data_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
        self.log = open(data_dir.parent / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream4d.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
             "--workers", "1", "--viewer", "none"], cwd=code, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.ps = psutil.Process(self.proc.pid)
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Watch:
    """RSS of the server every 20 ms and /health latency every 100 ms while an attack runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.before = server.ps.memory_info().rss
        self.peak = self.before
        self.health: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss), threading.Thread(target=self._health)]

    def __enter__(self) -> "Watch":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        time.sleep(1.0)
        self.after = self.server.ps.memory_info().rss

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.ps.memory_info().rss)
            time.sleep(0.02)

    def _health(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                httpx.get(f"{self.server.url}/health", timeout=60)
            except httpx.HTTPError:
                pass
            self.health.append(time.monotonic() - start)
            time.sleep(0.1)


def _stream_raw(port: int, head: bytes, body_bytes: int) -> str:
    """Send ``head`` then ``body_bytes`` zero bytes in 1 MB pieces; what happened."""
    chunk = b"a" * MB
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(head)
            sent = 0
            try:
                while sent < body_bytes:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                return f"cut off after {sent // MB} MB"
            answer = sock.recv(200)
            return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
    except OSError as exc:
        return f"error {exc.__class__.__name__}"


def attack_headers(server: Server) -> str:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: _stream_raw(server.port, head, 100 * MB), range(3)))
    return "3 x 100 MB header: " + "; ".join(sorted(set(outcomes)))


def attack_json(server: Server) -> str:
    declared = (b"POST /sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (300 * MB))
    a = _stream_raw(server.port, declared, 300 * MB)

    def chunked():
        yield b'{"pad": "'
        for _ in range(300):
            yield b"a" * MB
        yield b'"}'

    try:
        b = str(httpx.post(f"{server.url}/sessions", content=chunked(),
                           headers={"Content-Type": "application/json"}, timeout=300).status_code)
    except httpx.HTTPError as exc:
        b = f"closed ({exc.__class__.__name__})"
    return f"300 MB JSON, declared: {a}; chunked: {b}"


def attack_frames(server: Server, side: int, count: int, before_end=None) -> str:
    png = png_of_black(side, side)
    # The default model size (512 px, windows of 20) is slower than the frames arrive: the queue fills.
    r = httpx.post(f"{server.url}/sessions", json={"viewer": False, "gaussians": False}, timeout=30)
    sid, token = r.json()["id"], r.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    answers: dict[str, int] = {}
    with ws_client.connect(server.url.replace("http", "ws") + f"/sessions/{sid}/live", additional_headers=headers,
                           open_timeout=30, max_size=None) as ws:
        for i in range(count):
            ws.send(struct.pack("<d", i * 0.1) + png)
        for _ in range(count):
            kind = json.loads(ws.recv(timeout=300))
            key = kind.get("code", kind["type"])
            answers[key] = answers.get(key, 0) + 1
        if before_end is not None:
            before_end()
        ws.send(json.dumps({"type": "end"}))
        ws.recv(timeout=300)
    _wait_end(server, sid, headers)
    httpx.delete(f"{server.url}/sessions/{sid}", headers=headers, timeout=120)
    return f"{count} PNG frames of {side}x{side} ({len(png) // 1024} kB each): " + \
        ", ".join(f"{k} {v}" for k, v in sorted(answers.items()))


def attack_frames_busy(server: Server, side: int, count: int) -> str:
    """Frames pushed while the server's one worker runs an upload: nothing takes them off the queue
    unless live sessions have workers of their own."""
    r = httpx.post(f"{server.url}/sessions", json={**SMALL_MODEL, "target_fps": 12}, timeout=30)
    busy = r.json()["id"]
    busy_headers = {"Authorization": f"Bearer {r.json()['token']}"}
    httpx.post(f"{server.url}/sessions/{busy}/upload", content=(SHARED_DATA / "videos" / "great_wall.mp4").read_bytes(),
               headers={**busy_headers, "Content-Type": "video/mp4"}, timeout=120)
    deadline = time.monotonic() + 120
    while httpx.get(f"{server.url}/sessions/{busy}", headers=busy_headers, timeout=30).json()["state"] != "running":
        if time.monotonic() > deadline:
            raise RuntimeError("the upload job did not start")
        time.sleep(0.2)
    try:
        return "while an upload runs: " + attack_frames(server, side, count, before_end=lambda: httpx.post(
            f"{server.url}/sessions/{busy}/stop", headers=busy_headers, timeout=60))
    finally:
        _wait_end(server, busy, busy_headers)


def attack_uploads(server: Server, side: int, parallel: int) -> str:
    png = png_of_black(side, side)

    def one(_: int) -> str:
        r = httpx.post(f"{server.url}/sessions", json=SMALL_MODEL, timeout=30)
        sid, token = r.json()["id"], r.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        up = httpx.post(f"{server.url}/sessions/{sid}/upload", content=png, timeout=300,
                        headers={**headers, "Content-Type": "video/mp4"})
        state = ""
        if up.status_code == 202:
            state = " -> " + _wait_end(server, sid, headers)
        httpx.delete(f"{server.url}/sessions/{sid}", headers=headers, timeout=120)
        return f"{up.status_code}{state}"

    with ThreadPoolExecutor(parallel) as pool:
        outcomes = list(pool.map(one, range(parallel)))
    return f"{parallel} parallel uploads of a {side}x{side} PNG ({len(png) // 1024} kB): " + \
        ", ".join(sorted(set(outcomes)))


def attack_warmup(server: Server) -> str:
    r = httpx.post(f"{server.url}/sessions", json=SMALL_MODEL, timeout=30)
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    data = (SHARED_DATA / "videos" / "room.mp4").read_bytes()
    httpx.post(f"{server.url}/sessions/{r.json()['id']}/upload", content=data, timeout=120,
               headers={**headers, "Content-Type": "video/mp4"})
    return _wait_end(server, r.json()["id"], headers)


def _wait_end(server: Server, sid: str, headers: dict, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{server.url}/sessions/{sid}", headers=headers, timeout=60).json()["state"]
        if state in ("completed", "failed", "cancelled"):
            return state
        time.sleep(0.3)
    return "still running"


ATTACKS = {
    "headers": attack_headers,
    "json": attack_json,
    "frames-512": lambda s: attack_frames(s, 512, 32),  # control: frames already at the model size
    "frames": lambda s: attack_frames(s, 4096, 32),
    "frames-8k": lambda s: attack_frames(s, 8000, 8),
    "frames-busy": lambda s: attack_frames_busy(s, 4096, 32),
    "uploads": lambda s: attack_uploads(s, 4096, 3),
    "uploads-16k": lambda s: attack_uploads(s, 16000, 3),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose stream4d serve is attacked")
    ap.add_argument("--legacy", action="store_true", help="label the rows as a checkout before the limits")
    ap.add_argument("--only", default=",".join(ATTACKS), help=f"comma list of {', '.join(ATTACKS)}")
    ap.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args()
    rows = []
    for name in args.only.split(","):
        # A fresh server per attack: memory another attack left in the allocator would blur the baseline.
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(args.code.resolve(), Path(tmp) / "data")
            try:
                # One small job first: the baseline then includes the loaded pipeline, not just the web server.
                attack_warmup(server)
                with Watch(server) as watch:
                    outcome = ATTACKS[name](server)
            finally:
                server.stop()
        row = [name, f"{watch.before / MB:.0f}", f"{watch.peak / MB:.0f}", f"{watch.after / MB:.0f}",
               f"{(watch.peak - watch.before) / MB:+.0f}", f"{max(watch.health, default=0):.2f}", outcome]
        print(" | ".join(row), flush=True)
        rows.append(row)
    table = markdown_table(["attack", "RSS before (MB)", "peak (MB)", "after (MB)", "peak growth (MB)",
                            "slowest /health (s)", "server's answers"], rows)
    print(table)
    if args.write_docs:
        info = machine_info()
        which = "before the limits (legacy checkout)" if args.legacy else "with the limits (defaults)"
        body = (f"Server `stream4d serve` {which}, loopback, `--workers 1 --viewer none`; "
                f"{info['nproc']} cores ({info['cpu']}), load average at start "
                f"{info['loadavg'][0]:.1f}.\n\n{table}\n")
        write_docs_section("service-limits-legacy" if args.legacy else "service-limits", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
