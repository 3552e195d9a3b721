#!/usr/bin/env bash
# Regenerate data/demo: the synthetic room clip (demo.mp4) and its ground-truth cameras.json
# that the README's main example reconstructs. Deterministic: same code, same clip.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAM4D=${STREAM4D:-.venv/bin/stream4d}
command -v "$STREAM4D" >/dev/null || STREAM4D=stream4d

rm -f data/demo/demo.mp4 data/demo/cameras.json
"$STREAM4D" synth --scene room --seed 0 --trajectory orbit --frames 48 --size 512x384 --fps 10 \
  --traj-kw arc_deg=60 --traj-kw start_deg=-120 --video demo.mp4 --crf 18 --out data/demo
du -sh data/demo
