"""A real ``stream4d serve`` on loopback for the API tests, and small client helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stream4d.testdata import SHARED_DATA

DATA = SHARED_DATA
VIDEOS = DATA / "videos"
# Small model inputs keep the real pipeline fast on 2 shared cores; no viewer unless a test wants one.
FAST_OPTIONS = {"resolution": 128, "window": 8, "overlap": 2, "viewer": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m stream4d.cli serve`` as a child process; its JSON log goes to ``log_path``."""

    def __init__(self, data_dir: Path, workers: int = 2, max_upload_mb: float = 2.0, live_queue: int = 8,
                 viewer: str = "serve", extra_args: tuple[str, ...] = ("--allow-private-sources",),
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}  # on top of this process's environment
        self.live_queue = live_queue
        # Tests pull from a loopback HTTP server, which the service refuses by default.
        self.args = ["--data-dir", str(data_dir), "--workers", str(workers), "--max-upload-mb", str(max_upload_mb),
                     "--live-queue", str(live_queue), "--viewer", viewer, *extra_args]
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream4d.cli", "serve", "--port", str(port), *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster of two 1-CPU nodes (``ray start`` processes), one per test module."""
    from ray_cluster import RayCluster

    c = RayCluster(free_port(), nodes=2, cpus_per_node=1).start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> ServerProcess:
    """One shared service (2 workers, 2 MB upload limit) for the API tests."""
    srv = ServerProcess(tmp_path_factory.mktemp("serve") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


class Sess:
    """A created session and its auth header."""

    def __init__(self, client: httpx.Client, options: dict | None = None) -> None:
        r = client.post("/sessions", json={"viewer": False} if options is None else options)
        assert r.status_code == 201, r.text
        body = r.json()
        self.client = client
        self.id: str = body["id"]
        self.token: str = body["token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def status(self) -> dict:
        r = self.client.get(f"/sessions/{self.id}", headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()

    def upload(self, path: Path, content_type: str = "video/mp4", **params) -> httpx.Response:
        return self.client.post(f"/sessions/{self.id}/upload", content=path.read_bytes(),
                                headers={**self.headers, "Content-Type": content_type}, params=params)

    def download(self, name: str, dest: Path) -> Path:
        r = self.client.get(f"/sessions/{self.id}/results/{name}", headers=self.headers)
        assert r.status_code == 200, r.text
        (dest / name).write_bytes(r.content)
        return dest / name

    def wait(self, states=("completed", "failed", "cancelled"), timeout: float = 300.0) -> dict:
        return self.wait_until(lambda status: status["state"] in states, timeout, f"state in {states}")

    def wait_until(self, predicate, timeout: float = 300.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.2)
        raise AssertionError(f"session {self.id}: no {what} after {timeout} s: {self.status()}")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """A JSON error body with ``status`` (and ``code``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    err = response.json()["error"]
    assert err["status"] == status and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err
