"""``stream4d serve``: run the reconstruction service (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(subparsers) -> str:
    p = subparsers.add_parser(
        "serve", help="run the HTTP/WebSocket service",
        description="Serve the stream4d API: sessions, video uploads, live frames, progress, results.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--data-dir", type=Path, default=Path("stream4d-data"),
                   help="sessions.db and session files live here (default: ./stream4d-data)")
    p.add_argument("--workers", type=int, default=None,
                   help="reconstructions running at once (default: one per CPU core)")
    p.add_argument("--max-upload-mb", type=float, default=2048.0, help="largest accepted upload (default: 2048)")
    p.add_argument("--live-queue", type=int, default=32,
                   help="frames a live session buffers before dropping the oldest (default: 32)")
    p.add_argument("--viewer", choices=("none", "serve"), default="serve",
                   help="serve a live rerun web viewer for sessions that ask for one (default: serve)")
    p.add_argument("--vggt-weights", type=Path, default=None, help="checkpoint enabling the 'vggt' backend")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return "serve"


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.logging import configure_logging
    from server.settings import Settings, default_workers

    workers = args.workers if args.workers is not None else default_workers()
    try:
        settings = Settings(
            data_dir=args.data_dir, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), workers=workers,
            host=args.host, port=args.port, live_queue=args.live_queue, viewer=args.viewer,
            vggt_weights=args.vggt_weights, log_level=args.log_level,
        )
    except ValueError as exc:
        print(f"stream4d serve: {exc}", file=sys.stderr)
        return 2
    _share_cores(workers)
    configure_logging(args.log_level)
    app = create_app(settings)
    # Our RequestLog middleware logs requests (without query strings, which may carry tokens).
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                log_level=args.log_level, ws=_ws_protocol(), timeout_graceful_shutdown=30)
    return 0


def _ws_protocol() -> str:
    """uvicorn's sans-I/O websockets implementation where it exists (the older one is deprecated)."""
    from uvicorn.config import WS_PROTOCOLS

    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto"


def _share_cores(workers: int) -> None:
    """Give each concurrent job its share of the cores, not all of them each."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
