"""Executors: where the planned runs of a sweep train, one module each.

- `inprocess`: one run after another in this process (the default on one CPU or GPU);
- `pool`: one spawned worker per device slot (`--devices cuda:0,cuda:1`, `--runs-per-device`);
- `slurm`: a job array through submitit, one sweep point per array task, requeued on
  preemption.

Every executor trains a run through `common.train_claimed`: take the run's claim (skip it when
another process holds it), train, upsert the record into results.csv. Which slots a local sweep
gets is `llmscale.sweep.slots`' one expansion. Nothing here imports torch at module level.
"""

from __future__ import annotations

from llmscale.sweep.executors.common import (
    NOTES,
    SweepProgress,
    from_payload,
    payload,
    train_claimed,
)
from llmscale.sweep.executors.inprocess import run_in_process
from llmscale.sweep.executors.pool import run_pool
from llmscale.sweep.executors.slurm import (
    EXIT_QUEUED,
    EXIT_UNFINISHED,
    LIVE_STATES,
    SweepTask,
    check_partition,
    live_tasks,
    read_jobs,
    run_slurm,
    slurm_status_lines,
    slurm_sweep,
    task_states,
)

__all__ = [
    "EXIT_QUEUED", "EXIT_UNFINISHED", "LIVE_STATES", "NOTES", "SweepProgress", "SweepTask",
    "check_partition", "from_payload", "live_tasks", "payload", "read_jobs", "run_in_process",
    "run_pool", "run_slurm", "slurm_status_lines", "slurm_sweep", "task_states",
    "train_claimed",
]
