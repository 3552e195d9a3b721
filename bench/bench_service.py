"""The service under 8 short uploads at once: the local runner vs the Ray runner on one and on two nodes.

Each setup gets a fresh ``stream4d serve`` on loopback; the 8 uploads (12 frames of
data/demo/demo.mp4 at 128 px) are posted at once and the script waits until all have ended.
Every setup runs 2 jobs at a time, one CPU each, on this machine's cores:

- ``local``: ``--runner local --workers 2``;
- ``ray, 1 node``: ``--runner ray --workers 8`` on a head (0 CPUs, schedules nothing) plus one
  node of 2 CPUs;
- ``ray, 2 nodes``: the same with two nodes of 1 CPU.

Printed per setup: wall time from the first upload to the last completion, jobs per minute,
median job time (the session's ``started_at`` to ``finished_at``), and for Ray the
submit-to-start overhead: from the server submitting the task (``started_at``) to the task
running on its node (its line in ``job-attempts``), for the jobs that found a free CPU (the
first two; the others wait for one).

    PYTHONPATH=. python bench/bench_service.py [--write-docs]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "server"))  # the real cluster and server helpers of the tests
from conftest import ServerProcess, Sess, free_port  # noqa: E402
from ray_cluster import RayCluster  # noqa: E402

from bench.common import machine_info, markdown_table, write_docs_section  # noqa: E402
from server.storage import SharedDirectory  # noqa: E402

DEMO = REPO / "data" / "demo" / "demo.mp4"
OPTIONS = {"resolution": 128, "window": 8, "overlap": 2, "viewer": False, "max_frames": 12}
JOBS = 8


def run_uploads(server: ServerProcess) -> dict:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        sessions = [Sess(client, OPTIONS) for _ in range(JOBS)]
        started = time.time()
        with ThreadPoolExecutor(JOBS) as pool:
            codes = list(pool.map(lambda s: s.upload(DEMO, filename="demo.mp4").status_code, sessions))
        assert codes == [202] * JOBS, codes
        finals = [s.wait(timeout=900) for s in sessions]
        wall = max(f["finished_at"] for f in finals) - started
    bad = [f["state"] for f in finals if f["state"] != "completed"]
    if bad:
        raise RuntimeError(f"jobs did not complete: {bad}\n{server.log()}")
    overheads = []
    for s, f in zip(sessions, finals):
        attempts = SharedDirectory().attempts(str(server.data_dir / "sessions" / s.id / "out"))
        if attempts:
            overheads.append(attempts[0]["time"] - f["started_at"])
    return {"wall": wall, "job": statistics.median(f["finished_at"] - f["started_at"] for f in finals),
            "overhead": sorted(overheads)[:2]}


def setup(kind: str, nodes: int, root: Path) -> dict:
    cluster = None
    args: tuple[str, ...] = ()
    if kind == "ray":
        cluster = RayCluster(free_port(), nodes=nodes, cpus_per_node=2 // nodes).start()
        args = ("--runner", "ray", "--ray-address", cluster.address)
    srv = ServerProcess(root / f"{kind}{nodes}" / "data", workers=2 if kind == "local" else JOBS, viewer="none",
                        max_upload_mb=8, extra_args=args)
    srv.data_dir.parent.mkdir(parents=True)
    try:
        srv.start()
        return run_uploads(srv)
    finally:
        srv.stop()
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    args = parser.parse_args()
    info = machine_info()
    rows = []
    with tempfile.TemporaryDirectory(prefix="s4bench") as tmp:
        for label, kind, nodes in (("local", "local", 0), ("ray, 1 node", "ray", 1), ("ray, 2 nodes", "ray", 2)):
            r = setup(kind, nodes, Path(tmp))
            overhead = ", ".join(f"{o:.2f}" for o in r["overhead"]) if kind == "ray" else "-"
            rows.append([label, f"{r['wall']:.1f}", f"{JOBS / r['wall'] * 60:.1f}", f"{r['job']:.1f}", overhead])
            print(rows[-1], flush=True)
    table = markdown_table(["setup", "wall s (8 jobs)", "jobs/min", "median job s", "Ray submit-to-start s"], rows)
    print(table)
    if args.write_docs:
        body = (
            "## Service: local runner vs Ray (`bench/bench_service.py`)\n\n"
            f"8 uploads posted at once (12 frames of data/demo/demo.mp4, 128 px, windows of 8), 2 jobs at a "
            f"time with one CPU each in every setup; Ray nodes are `ray start` processes on this machine "
            f"(a head with 0 CPUs plus the nodes). {info['nproc']} cores, {info['cpu']}, "
            f"load average {info['loadavg'][0]:.1f} at the end.\n\n{table}\n\n"
            "The median job time is the session's `started_at` to `finished_at` (for Ray: task submission "
            "to the server's last bookkeeping, so waiting for a free CPU in Ray's queue counts). "
            "Submit-to-start is the Ray overhead of the two jobs that found a free CPU: the server "
            "submitting the task to the task running on its node: leasing a worker, starting its Python "
            "process and unpickling the job (which imports the server package); a worker that already ran "
            "a job is reused, so later jobs start faster. On 2 cores the Ray processes (GCS, raylets, "
            "workers) take their share of the same CPUs the jobs use: Ray pays off across machines, "
            "not on one.\n\n"
            "    PYTHONPATH=. python bench/bench_service.py --write-docs\n"
        )
        write_docs_section("bench_service", body)


if __name__ == "__main__":
    main()
