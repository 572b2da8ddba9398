#!/usr/bin/env bash
# Run a sweep on a SLURM cluster as a submitit job array: one sweep point per array task,
# requeued on preemption or timeout (the run resumes from its checkpoint), DDP inside a task when
# a run asks for several GPUs. Run it from a login node on the shared filesystem; it waits for
# the array, then fits and plots. Re-running resubmits only what is not finished.
#
# Knobs (environment variables, each overriding the config's sweep.slurm section):
#   PARTITION      SLURM partition                       (sweep.slurm.partition)
#   TIME_MIN       wall-clock limit per task, minutes     (sweep.slurm.time_min)
#   GPUS_PER_RUN   GPUs per run; > 1 runs DDP in the task (sweep.slurm.gpus_per_run)
#   MEM_GB         memory per task, GB                    (sweep.slurm.mem_gb)
# Further keys with --set, e.g. --set sweep.slurm.max_parallel=16 --set sweep.slurm.cpus_per_task=16
#
#   PARTITION=gpu TIME_MIN=720 scripts/sweep_slurm.sh configs/wikitext103_width_depth.yaml
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CONFIG [llmscale sweep options]" >&2; exit 2; }
# Paths (CONFIG, --out, output.dir) are the caller's: no cd; only the venv is found from here.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LLMSCALE=${LLMSCALE:-$( [ -x "$ROOT/.venv/bin/llmscale" ] && echo "$ROOT/.venv/bin/llmscale" || echo llmscale )}
args=(--executor slurm)
[ -n "${PARTITION:-}" ] && args+=(--partition "$PARTITION")
[ -n "${TIME_MIN:-}" ] && args+=(--time-min "$TIME_MIN")
[ -n "${GPUS_PER_RUN:-}" ] && args+=(--gpus-per-run "$GPUS_PER_RUN")
[ -n "${MEM_GB:-}" ] && args+=(--mem-gb "$MEM_GB")
exec "$LLMSCALE" sweep "$@" "${args[@]}"
