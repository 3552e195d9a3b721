#!/usr/bin/env bash
# Set up stream4d on a fresh Debian machine with Python 3.11: system library, venv, packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# open3d links against libusb; install it when missing.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so nothing later pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q -r requirements-cpu.txt
.venv/bin/python -m pip install -q -e ".[test]"
echo "stream4d set up in .venv"
