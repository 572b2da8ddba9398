#!/usr/bin/env bash
# One run across NGPUS GPUs of this machine with DDP (torchrun, NCCL). The global batch
# (train.batch_size) is split across the GPUs; only rank 0 logs and writes.
#
#   NGPUS=8 scripts/train_ddp.sh CONFIG [--set key=value ...] [--out RUN_DIR]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: NGPUS=N $0 CONFIG [llmscale train options]" >&2; exit 2; }
# Paths (CONFIG, --out, output.dir) are the caller's: no cd; only the venv is found from here.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3 )}
NGPUS=${NGPUS:-$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPUS" \
    -m llmscale train "$@"
