"""A real Ray cluster on this machine for the Ray runner tests: a head and worker nodes,
each with a temp dir of its own, torn down by killing exactly the processes of those dirs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")
REPO = Path(__file__).resolve().parents[2]
# A killed node is declared dead within seconds, not the default tens of seconds.
FAST_FAILURE_DETECTION = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "4",
    "RAY_health_check_initial_delay_ms": "1000",
}


class RayCluster:
    """``ray start --head --num-cpus 0`` (it schedules nothing: the server's Ray driver connects
    to it, so killing a worker node never takes the server down) plus ``nodes`` worker nodes
    of ``cpus_per_node`` CPUs each."""

    def __init__(self, port: int, nodes: int = 2, cpus_per_node: int = 1) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.temp_dirs: list[str] = []  # short paths: Ray's Unix sockets live in them

    def _env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, **FAST_FAILURE_DETECTION, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, args: list[str]) -> None:
        temp = tempfile.mkdtemp(prefix="s4ray", dir="/tmp")
        self.temp_dirs.append(temp)
        result = subprocess.run([RAY, "start", *args, "--temp-dir", temp, "--node-ip-address", "127.0.0.1",
                                 "--disable-usage-stats"], env=self._env(), capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> "RayCluster":
        try:
            self._start(["--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard=false"])
            for _ in range(self.nodes):
                self._start(["--address", self.address, "--num-cpus", str(self.cpus_per_node)])
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self) -> None:
        """One more worker node of ``cpus_per_node`` CPUs (after a test killed one)."""
        self._start(["--address", self.address, "--num-cpus", str(self.cpus_per_node)])

    def processes(self, temp_dir: str | None = None) -> list[psutil.Process]:
        """This cluster's processes (or one node's): those whose command line names its temp dir."""
        dirs = [temp_dir] if temp_dir else self.temp_dirs
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
            try:
                if proc.info["uids"] and proc.info["uids"].real != os.getuid():
                    continue
                line = " ".join(proc.info["cmdline"] or [])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if any(d in line for d in dirs):
                found.append(proc)
        return found

    def node_of_raylet(self, pid: int) -> str | None:
        """The temp dir of the node whose raylet is ``pid`` (None: not a raylet of this cluster)."""
        try:
            proc = psutil.Process(pid)
            line = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            return None
        if "raylet" not in proc.name() and "raylet" not in line:
            return None
        return next((d for d in self.temp_dirs if d in line), None)

    def kill_node(self, raylet_pid: int) -> None:
        """SIGKILL a whole worker node at once, as a machine dies: its raylet, the workers it
        started (their results would otherwise still reach the server) and its other processes."""
        node = self.node_of_raylet(raylet_pid)
        if node is None or node == self.temp_dirs[0]:
            raise ValueError(f"pid {raylet_pid} is not the raylet of a worker node of this cluster")
        raylet = psutil.Process(raylet_pid)
        procs = {p.pid: p for p in [raylet, *raylet.children(recursive=True), *self.processes(node)]}
        for proc in procs.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(procs.values()), timeout=10)

    def stop(self) -> None:
        procs = self.processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for temp in self.temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout} s")
