"""The layering is a contract (pyproject [tool.importlinter], checked by ``lint-imports``)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import stream4d

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[2]
ROOF = {"stream4d.pipeline", "stream4d.commands", "stream4d.cli"}


def contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_stage_imports_only_the_floor_and_earlier_stages():
    script = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_stream4d_module_is_in_the_roof_or_in_the_floor_contract():
    floor = next(c for c in contracts() if c["type"] == "forbidden")["source_modules"]
    modules = {f"stream4d.{m.name}" for m in pkgutil.iter_modules(stream4d.__path__)}
    assert modules - ROOF == set(floor), "a new stream4d module belongs to the floor contract (or the roof)"
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    assert ROOF <= set(layers)
