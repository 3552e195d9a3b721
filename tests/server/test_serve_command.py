import subprocess
import sys


def test_serve_refuses_bad_settings_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stream4d.cli", "serve", "--data-dir", str(tmp_path), "--workers", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "workers must be >= 1" in result.stderr


def test_serve_is_a_discovered_cli_command():
    result = subprocess.run([sys.executable, "-m", "stream4d.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--data-dir", "--workers", "--max-upload-mb"):
        assert flag in result.stdout
