import subprocess
import sys


def test_serve_refuses_bad_settings_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stream4d.cli", "serve", "--data-dir", str(tmp_path), "--workers", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "workers must be >= 1" in result.stderr


def test_serve_refuses_a_negative_or_endless_keyframer_lag(tmp_path):
    for value in ("-1", "inf"):
        result = subprocess.run(
            [sys.executable, "-m", "stream4d.cli", "serve", "--data-dir", str(tmp_path), "--live-keyframer-lag", value],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert "live_keyframer_lag must be >= 0 seconds (finite)" in result.stderr


def test_serve_refuses_ray_settings_without_the_ray_runner_or_with_bad_resources(tmp_path):
    for flags, message in ((["--ray-address", "127.0.0.1:6379"], "ray_address needs runner 'ray'"),
                           (["--runner", "ray", "--ray-num-cpus", "0"], "num_cpus > 0")):
        result = subprocess.run(
            [sys.executable, "-m", "stream4d.cli", "serve", "--data-dir", str(tmp_path), *flags],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr


def test_serve_is_a_discovered_cli_command():
    result = subprocess.run([sys.executable, "-m", "stream4d.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--data-dir", "--workers", "--max-upload-mb"):
        assert flag in result.stdout


def test_every_serve_flag_is_documented_in_the_api_doc_and_every_documented_flag_exists():
    import re
    from pathlib import Path

    result = subprocess.run([sys.executable, "-m", "stream4d.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=120)
    flags = set(re.findall(r"(--[a-z][a-z0-9-]+)", result.stdout)) - {"--help"}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^\| `(--[a-z][a-z0-9-]+)`", doc, re.M))
    documented |= set(re.findall(r"^\| `--[a-z-]+`, `(--[a-z][a-z0-9-]+)`", doc, re.M))
    assert flags == documented, (flags - documented, documented - flags)
    for limit in ("--max-header-kb", "--max-headers", "--max-body-kb", "--max-upload-mb", "--request-timeout",
                  "--max-connections", "--max-pixels", "--max-sessions", "--max-live-sessions", "--live-queue-mb"):
        assert limit in flags
