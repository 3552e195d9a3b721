"""``stream4d serve``: run the reconstruction service (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path


def add_parser(subparsers) -> str:
    p = subparsers.add_parser(
        "serve", help="run the HTTP/WebSocket service",
        description="Serve the stream4d API: sessions, video uploads, live frames, progress, results. "
                    "Every limit below is documented in docs/api.md.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--data-dir", type=Path, default=Path("stream4d-data"),
                   help="sessions.db and session files live here, readable by this user only "
                        "(default: ./stream4d-data)")
    p.add_argument("--workers", type=int, default=None,
                   help="reconstructions of uploads and pulled streams running at once (default: one per CPU core)")
    p.add_argument("--viewer", choices=("none", "serve"), default="serve",
                   help="serve a live rerun web viewer for sessions that ask for one (default: serve)")
    p.add_argument("--vggt-weights", type=Path, default=None, help="checkpoint enabling the 'vggt' backend")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))

    limits = p.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", type=float, default=2048.0, help="largest accepted upload (default: 2048)")
    limits.add_argument("--max-body-kb", type=float, default=64.0,
                        help="largest request body on every route but the upload (default: 64)")
    limits.add_argument("--max-header-kb", type=float, default=64.0,
                        help="largest request line + headers (default: 64)")
    limits.add_argument("--max-headers", type=int, default=100, help="most header lines in a request (default: 100)")
    limits.add_argument("--request-timeout", type=float, default=10.0,
                        help="seconds to send a request head, or between two parts of a body (default: 10)")
    limits.add_argument("--max-connections", type=int, default=200,
                        help="connections and requests at once; more get 503 (default: 200)")
    limits.add_argument("--max-pixels", type=int, default=4096 * 4096,
                        help="largest frame (width x height) of an upload or a live frame (default: 16777216)")
    limits.add_argument("--max-sessions", type=int, default=1000,
                        help="sessions not yet ended (created, queued, running); more get 503 (default: 1000)")
    limits.add_argument("--max-live-sessions", type=int, default=2,
                        help="live WebSocket sessions at once, each on a worker of its own (default: 2)")
    limits.add_argument("--live-queue", type=int, default=32,
                        help="frames a live session buffers before dropping the oldest (default: 32)")
    limits.add_argument("--live-queue-mb", type=float, default=64.0,
                        help="bytes of decoded frames a live session buffers before dropping the oldest "
                             "(default: 64)")
    limits.add_argument("--max-message-mb", type=float, default=16.0,
                        help="largest WebSocket message, i.e. one live frame as sent (default: 16)")
    limits.add_argument("--live-idle-timeout", type=float, default=30.0,
                        help="seconds a live session waits for a frame before it fails as stalled (default: 30)")
    limits.add_argument("--live-keyframer-lag", type=float, default=0.5,
                        help="seconds a live frame may wait for the keyframer before it judges only every third "
                             "frame to catch up; 3600 never skips (reproducible live runs) (default: 0.5)")

    ray = p.add_argument_group("ray (pip install 'stream4d[ray]'; docs/deploy.md)")
    ray.add_argument("--runner", choices=("local", "ray"), default="local",
                     help="where jobs run: threads in this process, or Ray tasks and actors (default: local)")
    ray.add_argument("--ray-address", default=None,
                     help="Ray cluster to join, e.g. 'auto' or HOST:6379 (default: a single-node Ray in the server)")
    ray.add_argument("--ray-num-cpus", type=float, default=1.0, help="CPUs each Ray job reserves (default: 1)")
    ray.add_argument("--ray-num-gpus", type=float, default=0.0,
                     help="GPUs each Ray job reserves, fractions allowed (default: 0)")
    ray.add_argument("--ray-max-retries", type=int, default=3,
                     help="re-runs of a Ray job whose worker or node died (default: 3)")

    access = p.add_argument_group("access")
    access.add_argument("--trusted-hosts", default=None,
                        help="comma-separated Host header names accepted, '*' for any "
                             "(default: localhost and --host; any when --host is 0.0.0.0 or ::)")
    access.add_argument("--allow-devices", action="store_true",
                        help="let clients pull camera:N, a device on the server (default: off)")
    access.add_argument("--allow-private-sources", action="store_true",
                        help="let clients pull URLs on loopback, private or link-local addresses (default: off)")
    return "serve"


def build_settings(args: argparse.Namespace):
    """``Settings`` from the parsed flags (ValueError for a bad combination)."""
    from server.settings import Settings, default_workers

    hosts = None if args.trusted_hosts is None else [h for h in args.trusted_hosts.split(",") if h.strip()]
    return Settings(
        data_dir=args.data_dir, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        workers=args.workers if args.workers is not None else default_workers(),
        host=args.host, port=args.port, viewer=args.viewer, vggt_weights=args.vggt_weights, log_level=args.log_level,
        max_body_bytes=int(args.max_body_kb * 1024), max_header_bytes=int(args.max_header_kb * 1024),
        max_headers=args.max_headers, request_timeout=args.request_timeout, max_connections=args.max_connections,
        max_pixels=args.max_pixels, max_sessions=args.max_sessions, max_live_sessions=args.max_live_sessions,
        live_queue=args.live_queue, live_queue_bytes=int(args.live_queue_mb * 1024 * 1024),
        live_idle_timeout=args.live_idle_timeout, live_keyframer_lag=args.live_keyframer_lag, trusted_hosts=hosts,
        allow_devices=args.allow_devices, allow_private_sources=args.allow_private_sources,
        runner=args.runner, ray_address=args.ray_address, ray_num_cpus=args.ray_num_cpus,
        ray_num_gpus=args.ray_num_gpus, ray_max_retries=args.ray_max_retries,
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.http import guarded_h11
    from server.logging import configure_logging, log_event

    try:
        settings = build_settings(args)
    except ValueError as exc:
        print(f"stream4d serve: {exc}", file=sys.stderr)
        return 2
    if settings.runner == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            print("stream4d serve: --runner ray needs Ray: pip install 'stream4d[ray]'", file=sys.stderr)
            return 2
    os.umask(0o077)  # sessions.db, uploads and results: readable by the server's user only
    _share_cores(settings.workers)
    configure_logging(args.log_level)
    for warning in deployment_warnings(settings, args.trusted_hosts is not None):
        log_event("service.warning", logging.WARNING, warning=warning)
    app = create_app(settings)
    # Our RequestLog middleware logs requests (without query strings, which may carry tokens).
    # h11, not httptools: it bounds the request head (httptools buffers any size).
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                log_level=args.log_level, ws=_ws_protocol(), timeout_graceful_shutdown=30,
                http=guarded_h11(settings.request_timeout), h11_max_incomplete_event_size=settings.max_header_bytes,
                limit_concurrency=settings.max_connections, ws_max_size=int(args.max_message_mb * 1024 * 1024))
    return 0


def deployment_warnings(settings, trusted_hosts_given: bool) -> list[str]:
    """What is risky about how the service is about to run."""
    warnings = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        warnings.append("running as root: run the service as an unprivileged user")
    if not _is_loopback(settings.host) and not trusted_hosts_given:
        warnings.append(f"listening on {settings.host} (not loopback) without --trusted-hosts: any Host header is "
                        "accepted where the bind address is not a name clients use; the API docs (/docs) and the "
                        "rerun viewer ports have no auth: put them behind a reverse proxy (docs/api.md)")
    if settings.allow_private_sources:
        warnings.append("--allow-private-sources: clients can make the server fetch from its own networks")
    if settings.allow_devices:
        warnings.append("--allow-devices: clients can read the server's cameras")
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ws_protocol() -> str:
    """uvicorn's sans-I/O websockets implementation where it exists (the older one is deprecated)."""
    from uvicorn.config import WS_PROTOCOLS

    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto"


def _share_cores(workers: int) -> None:
    """Give each concurrent job its share of the cores, not all of them each."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
