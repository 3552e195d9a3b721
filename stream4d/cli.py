"""The ``stream4d`` command line: one subcommand per module in ``stream4d.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

# Before numpy loads: a run's stages already keep every core busy on threads of their own, and
# OpenBLAS's threads on top of them spin waiting for each other (docs/benchmarks.md, "Stop 26").
# An explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from stream4d import __version__, commands  # noqa: E402


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="stream4d", description="Streaming 3D/4D reconstruction.")
    parser.add_argument("--version", action="version", version=f"stream4d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"stream4d.commands.{info.name}")
        name = module.add_parser(sub)
        runners[name] = module.run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    return int(runners[args.command](args) or 0)


if __name__ == "__main__":
    sys.exit(main())
