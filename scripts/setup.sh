#!/usr/bin/env bash
# Set up everything classicnets needs on a fresh Debian machine, idempotently:
#   a virtual environment in .venv with torch + torchvision and classicnets (editable),
#   and the real Fashion-MNIST files from Debian's dataset-fashion-mnist package when we are root.
# Usage: bash scripts/setup.sh [--dev]     (--dev adds pytest, hypothesis, ruff and the extras: onnx, onnxscript,
#                                           onnxruntime, safetensors, tensorboard, so every test runs)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
# torch and torchvision first, pinned to the pair that lies on this machine's disk (a CUDA build that
# also runs on CPU); `pip install -e .` then finds them satisfied.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "setup: installing torch and torchvision (about 75 s)" >&2
  .venv/bin/pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -c "import classicnets, torch, torchvision" || { echo "setup: install failed" >&2; exit 1; }

# Real Fashion-MNIST, offline: Debian ships the four official IDX files.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "setup: could not install dataset-fashion-mnist; classicnets will try its download mirrors" >&2
  else
    echo "setup: not root: install dataset-fashion-mnist yourself, or let classicnets download the data" >&2
  fi
fi
echo "setup: ready (.venv/bin/classicnets)" >&2
