"""The service imports what a job runs in the background at startup, so that a first live session's
frames do not pile up (and get dropped) while its run imports torch and the rest."""

from __future__ import annotations

import logging
import sys
import threading
import time

from fastapi.testclient import TestClient

from server.app import create_app
from server.service import JOB_MODULES, SessionManager
from server.settings import Settings


def test_warm_up_imports_what_a_local_job_runs(tmp_path):
    seconds = SessionManager(Settings(data_dir=tmp_path / "data")).warm_up()
    assert seconds is not None and seconds >= 0
    assert all(name in sys.modules for name in JOB_MODULES) and "torch" in sys.modules


def test_the_service_warms_up_in_the_background_at_startup(tmp_path, caplog):
    logger = logging.getLogger("stream4d.server")
    logger.addHandler(caplog.handler)  # the service's logger may not propagate to the root
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        app = create_app(Settings(data_dir=tmp_path / "data"))
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            assert client.get("/health").status_code == 200
            deadline = time.monotonic() + 120
            while any(t.name == "stream4d-warm-up" for t in threading.enumerate()) and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
    warmed = [r for r in caplog.records if r.getMessage() == "service.warmed"]
    assert len({id(r) for r in warmed}) == 1 and warmed[0].seconds >= 0  # once (the same record may come twice)
