#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv.
# torch first and pinned to a build pip can find here: on a CPU-only machine 2.13.0 is the CPU
# wheel; on a CUDA machine PyPI's 2.13.0 is the CUDA build. Set LLMSCALE_TORCH to use another
# version or index, e.g. LLMSCALE_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q ${LLMSCALE_TORCH:-torch==2.13.0}
.venv/bin/python -m pip install -q -e ".[dev]"
echo "llmscale installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
