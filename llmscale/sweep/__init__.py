"""Sweeps: expand one config into many runs, skip finished ones, hand the rest to an executor.

    llmscale sweep CONFIG [--set ...] [--out DIR] [--devices ...] [--executor slurm]

- `plan`: expand the sweep section into run configs (`plan_points`, `plan_sweep`);
- `state`: the sweep directory's identity (sweep.yaml), claims, each run's state;
- `executors`: in-process, a pool of device workers, SLURM job arrays (submitit).

The directory layout is llmscale.layout's. This package never imports the analysis, plots or
report: the runner does not depend on presentation (the CLI runs the analysis afterwards).
"""

from __future__ import annotations

from pathlib import Path

from llmscale.config import RunConfig
from llmscale.errors import UserError
from llmscale.records import RunRecord
from llmscale.sweep import slots as _slots
from llmscale.sweep.executors import SweepTask, run_in_process, run_slurm
from llmscale.sweep.executors.pool import AutoPacking, run_pool
from llmscale.sweep.plan import SweepPoint, plan_points, plan_sweep, run_dir_name, say, shape
from llmscale.sweep.state import (
    PlannedRun,
    claim_sweep_dir,
    count_states,
    dropped_records,
    load_sweep_config,
    planned_run,
    planned_run_ids,
    sweep_identity,
    sweep_state,
)

EXECUTORS = ("local", "slurm")


def run_sweep(cfg: RunConfig, out_dir: str | Path, *, devices: str | list[str] | None = None,
              runs_per_device: int | str = 1, executor: str | None = None,
              retry_failed: bool = False, force: bool = False, progress: bool = True,
              slurm_cluster: str | None = None) -> list[RunRecord]:
    """Train every run of the sweep that is not finished; return the records of all runs.

    devices: None = the one device train_run's "auto" picks (cuda:0, else cpu); "cpu", "auto"
    (every GPU) or a comma-separated list ("cuda:0,cuda:1"; "cpu,cpu" runs two CPU workers).
    runs_per_device: k runs at once on each device, or "auto" (estimate.auto_packing's rule).
    executor: "local" | "slurm" (default cfg.sweep.executor). slurm_cluster is passed to
    submitit.AutoExecutor (None: SLURM; "local": submitit's local executor, for tests).
    Runs held by another process (its claim lock) are skipped, not waited for.
    """
    out = Path(out_dir)
    executor = executor or cfg.sweep.executor
    if executor not in EXECUTORS:
        raise UserError(f"executor {executor!r}: allowed: {' or '.join(EXECUTORS)}")
    names: list[str] = []
    if executor == "local":
        runs_per_device = _slots.parse_runs_per_device(runs_per_device)
        names = _slots.device_names(devices)
        if runs_per_device != _slots.AUTO:
            _slots.expand(names, runs_per_device)  # refused before anything is written
    points = plan_points(cfg)
    claim_sweep_dir(cfg, out, force, points)
    planned = sweep_state(cfg, out, points)
    todo = [p for p in planned
            if p.state in ("todo", "partial", "preempted") or (retry_failed and p.state == "failed")]
    counts = count_states(planned)
    skipped_failed = 0 if retry_failed else counts["failed"]
    if progress or todo:
        say(f"sweep {cfg.name!r}: {len(planned)} runs: {counts['done']} done, {len(todo)} to train"
            + (f", {counts['running']} running elsewhere (skipped)" if counts["running"] else "")
            + (f", {skipped_failed} failed (not retried; --retry-failed)" if skipped_failed else ""))
    if todo:
        if executor == "slurm":
            run_slurm(cfg, out, todo, slurm_cluster, progress)
        else:
            _run_local(out, todo, planned, names, runs_per_device, progress)
        planned = sweep_state(cfg, out, points, probe_claims=False)
    return [p.record for p in planned if p.record is not None]


def _run_local(out: Path, todo: list[PlannedRun], planned: list[PlannedRun], names: list[str],
               runs_per_device: int | str, progress: bool) -> None:
    """In this process when one slot will do, else a pool of workers (slots.expand, or
    AutoPacking's answer for auto)."""
    packing = None
    if runs_per_device == _slots.AUTO:
        packing = AutoPacking(names, todo, [p.record for p in planned if p.record is not None])
    slots = packing.slots() if packing is not None else _slots.expand(names, runs_per_device)
    # auto on GPUs may add workers once runs have measured the rate: a pool even for one
    growable = packing is not None and packing.kind == "cuda"
    if len(slots) == 1 and not growable:
        run_in_process(out, todo, slots[0], progress)
    else:
        run_pool(out, todo, slots, progress, packing=packing)


__all__ = [
    "EXECUTORS", "PlannedRun", "SweepPoint", "SweepTask", "claim_sweep_dir",
    "count_states", "dropped_records", "load_sweep_config", "plan_points",
    "plan_sweep", "planned_run", "planned_run_ids", "run_dir_name", "run_sweep", "say", "shape",
    "sweep_identity", "sweep_state",
]
