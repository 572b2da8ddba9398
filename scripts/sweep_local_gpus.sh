#!/usr/bin/env bash
# Run a sweep on every GPU of this machine: one worker per GPU, RUNS_PER_GPU runs sharing each
# GPU at a time (pack small models; 1 for big ones). Re-running resumes: finished runs are
# skipped and unfinished ones continue from their last checkpoint.
#
#   scripts/sweep_local_gpus.sh CONFIG [--set key=value ...] [--out DIR]
#   RUNS_PER_GPU=4 scripts/sweep_local_gpus.sh configs/quickstart.yaml
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CONFIG [llmscale sweep options]" >&2; exit 2; }
# Paths (CONFIG, --out, output.dir) are the caller's: no cd; only the venv is found from here.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LLMSCALE=${LLMSCALE:-$( [ -x "$ROOT/.venv/bin/llmscale" ] && echo "$ROOT/.venv/bin/llmscale" || echo llmscale )}
exec "$LLMSCALE" sweep "$@" --devices auto --runs-per-device "${RUNS_PER_GPU:-1}"
