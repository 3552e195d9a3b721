"""Property-based requests generated from the served OpenAPI schema: never a 5xx, never a
schema-violating request accepted (ST201), and ``Allow`` headers that match the schema (ST205)."""

import subprocess
import sys
from pathlib import Path

from conftest import FAST_OPTIONS, VIDEOS, Sess


def test_no_operation_answers_with_a_server_error(client, server, tmp_path):
    # A real, finished session: its id and token let the generated requests past auth into the
    # handlers (and its event stream ends at once instead of streaming forever).
    s = Sess(client, FAST_OPTIONS)
    assert s.upload(VIDEOS / "room.mp4").status_code == 202
    assert s.wait(timeout=240)["state"] == "completed"
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\n"path.session_id" = "{s.id}"\n')
    st = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error,negative_data_rejection,allow_header_conformance",
         "--max-examples", "8", "--phases", "examples,coverage,fuzzing", "--workers", "1", "--seed", "1",
         "--header", f"Authorization: Bearer {s.token}", "--request-timeout", "60",
         "--exclude-method", "DELETE", "--suppress-health-check", "all", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " 0 generated" not in result.stdout and "passed" in result.stdout
