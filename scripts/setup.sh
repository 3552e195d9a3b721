#!/usr/bin/env bash
# Set up stream4d on a fresh Debian machine with Python 3.11: system library, venv, packages.
# --test also installs what the test suite needs (test and ray extras: the `ray`-marked tests start a
# local Ray cluster; Debian's chromium for the viewer test).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TESTS=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=0
apt_install() {
  [ $apt_updated = 1 ] || { $SUDO apt-get update -qq; apt_updated=1; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# open3d links against libusb; install it when missing.
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || apt_install libusb-1.0-0
[ $WITH_TESTS = 1 ] && ! command -v chromium >/dev/null && apt_install chromium

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so nothing later pulls a multi-GB CUDA build; then the package with every
# other dependency at the exact version of requirements.lock (scripts/lock.sh refreshes it).
.venv/bin/python -m pip install -q -r requirements-cpu.txt
if [ $WITH_TESTS = 1 ]; then
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[test,ray,ba]"
else
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[ba]"
fi
echo "stream4d set up in .venv"
