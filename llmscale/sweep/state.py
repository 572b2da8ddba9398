"""The sweep directory: its identity (sweep.yaml), per-run claims, and each run's state.

A run's state is read from results.csv and its run directory's record.json (a process killed
between train_run returning and the upsert leaves only the latter): completed runs are done,
failed / diverged / oom ones are retried only when asked, preempted and partial (checkpointed)
ones are resumed by train_run from their checkpoint.

A sweep directory may grow: a changed sweep section whose runs keep their run_ids (another
width, seed or budget) is accepted, finished runs are kept and only new runs train. Runs that
drop out of the plan stay in results.csv; `planned_run_ids` tells the fit which runs the
current plan holds. A changed base config changes every run_id and is refused without --force.

Nothing here imports torch: a finished sweep is recognised from files alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from llmscale import layout
from llmscale.accounting import RunAccounting, run_accounting
from llmscale.atomic import atomic_write_text
from llmscale.config import RunConfig, from_dict, run_identity
from llmscale.errors import UserError
from llmscale.records import RunRecord, read_record_json, read_results, upsert_record
from llmscale.sweep.plan import SweepPoint, plan_points, run_dir_name, say

FAILED_STATUSES = ("failed", "diverged", "oom")
STATES = ("done", "running", "failed", "partial", "preempted", "todo")


# --------------------------------------------------------------------------------------------
# Identity


def sweep_identity(cfg: RunConfig) -> dict[str, Any]:
    """What makes two invocations the same sweep: the trained base run, the name and the spec.

    Where and how it runs (output dir, executor, SLURM resources) is left out, so the same
    sweep can be continued on another machine or executor.
    """
    spec = cfg.to_dict()["sweep"]
    for key in ("executor", "slurm"):
        spec.pop(key, None)
    return {"name": cfg.name, "base": run_identity(cfg), "sweep": spec}


def _sweep_doc(cfg: RunConfig) -> str:
    header = ("# Written by `llmscale sweep`: the resolved base config and sweep spec.\n"
              "# A changed sweep section may grow the sweep; a changed base config is refused\n"
              "# unless --force.\n")
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def load_sweep_config(sweep_dir: Path) -> RunConfig:
    p = Path(sweep_dir) / layout.SWEEP_FILE
    if not p.is_file():
        raise UserError(f"{str(sweep_dir)!r} is not a sweep directory (no {layout.SWEEP_FILE}); "
                        f"run `llmscale sweep CONFIG --out {sweep_dir}` first")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{p}: cannot be read as YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{p}: expected a mapping of config sections")
    try:
        return from_dict(raw)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None


def planned_run_ids(sweep_dir: str | Path) -> set[str] | None:
    """run_ids of the sweep's current plan (from its sweep.yaml); None when there is no
    sweep.yaml (a bare results.csv): then every run counts. Fits leave the other runs out."""
    if not (Path(sweep_dir) / layout.SWEEP_FILE).is_file():
        return None
    cfg = load_sweep_config(Path(sweep_dir))
    return {p.run_id for p in plan_points(cfg, log=lambda _msg: None)}


def _finished_ids(out_dir: Path) -> set[str]:
    records, _ = read_results(layout.results_path(out_dir))
    return {r.run_id for r in records if r.status == "completed"}


def claim_sweep_dir(cfg: RunConfig, out_dir: Path, force: bool,
                    points: list[SweepPoint] | None = None) -> None:
    """Write DIR/sweep.yaml, refusing a directory that holds a different sweep unless `force`.

    The same name and base config with another sweep section is the same sweep, grown or
    shrunk: accepted, with a line saying what is kept, added and left out of the plan.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / layout.SWEEP_FILE
    if points is None:
        points = plan_points(cfg)
    new_ids = {pt.run_id for pt in points}
    mine = sweep_identity(cfg)
    other: str | None = None
    if p.is_file():
        try:
            theirs = sweep_identity(load_sweep_config(out_dir))
        except UserError as e:
            theirs, other = None, f"its {layout.SWEEP_FILE} is unreadable ({e})"
        if theirs is not None and (theirs["name"], theirs["base"]) != (mine["name"], mine["base"]):
            diff = [k for k in ("name", "base") if theirs[k] != mine[k]]
            orphans = len(_finished_ids(out_dir) - new_ids)
            other = (f"it holds sweep {theirs['name']!r} whose "
                     f"{' and '.join('base config' if k == 'base' else k for k in diff)} differ "
                     f"(a changed base config changes every run_id: {orphans} finished run(s) "
                     f"would be left out of this sweep's plan, kept in {layout.RESULTS_FILE})")
        elif theirs is not None and theirs["sweep"] != mine["sweep"]:
            _say_growth(cfg, out_dir, new_ids)
    else:
        records, _ = read_results(layout.results_path(out_dir))
        names = sorted({r.sweep for r in records if r.sweep and r.sweep != cfg.name})
        if names:
            other = f"its {layout.RESULTS_FILE} holds runs of sweep(s) {', '.join(map(repr, names))}"
    if other is not None:
        if not force:
            raise UserError(f"output directory {str(out_dir)!r} is in use: {other}; use another "
                            f"--out, or --force to add this sweep's runs to it")
        say(f"--force: {out_dir}: {other}; writing this sweep's {layout.SWEEP_FILE} over it")
    if not p.is_file() or p.read_text(encoding="utf-8") != _sweep_doc(cfg):
        atomic_write_text(p, _sweep_doc(cfg))


def _say_growth(cfg: RunConfig, out_dir: Path, new_ids: set[str]) -> None:
    try:
        old_ids = planned_run_ids(out_dir) or set()
    except UserError:  # an old plan that no longer expands (say, a budget now too small)
        old_ids = set()
    finished = _finished_ids(out_dir)
    kept = len(finished & new_ids)
    added = len(new_ids - old_ids)
    dropped = len((old_ids | finished) - new_ids)
    say(f"sweep {cfg.name!r} changed: {len(new_ids)} runs planned, {kept} finished kept, "
        f"{added} new" + (f"; {dropped} no longer in the plan (kept in {layout.RESULTS_FILE}, "
                          f"left out of fits)" if dropped else ""))


# --------------------------------------------------------------------------------------------
# Claims: a per-run lock file held while some process trains the run


def claim_lock(claim_path: Path) -> FileLock:
    return FileLock(str(claim_path), timeout=0)


def is_claimed(claim_path: Path) -> bool:
    """True when another process holds the run's claim (probe without waiting)."""
    if not claim_path.exists():
        return False
    lock = claim_lock(claim_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


# --------------------------------------------------------------------------------------------
# State of each planned run


@dataclass(frozen=True)
class PlannedRun:
    point: SweepPoint
    run_dir: Path
    claim_path: Path
    accounting: RunAccounting
    state: str  # one of STATES
    record: RunRecord | None  # the latest known record (results.csv or record.json)

    @property
    def cfg(self) -> RunConfig:
        return self.point.cfg

    @property
    def run_id(self) -> str:
        return self.point.run_id


def planned_run(out_dir: Path, point: SweepPoint, state: str = "todo",
                record: RunRecord | None = None) -> PlannedRun:
    name = run_dir_name(point.cfg)
    return PlannedRun(point=point, run_dir=layout.run_dir(out_dir, name),
                      claim_path=layout.claim_path(out_dir, name),
                      accounting=run_accounting(point.cfg), state=state, record=record)


def table_record(rec: RunRecord, p: PlannedRun, out_dir: Path) -> RunRecord:
    """The record as results.csv holds it: run_dir relative to the sweep directory (so the
    directory can be moved or shared), and the plan's sweep_point and flops_budget."""
    return dataclasses.replace(rec, run_dir=os.path.relpath(p.run_dir, out_dir),
                               sweep_point=p.point.sweep_point, flops_budget=p.point.flops_budget)


def _as_points(runs: Iterable[RunConfig | SweepPoint]) -> list[SweepPoint]:
    return [r if isinstance(r, SweepPoint) else SweepPoint(cfg=r, point={}, flops_budget=None)
            for r in runs]


def sweep_state(cfg: RunConfig, out_dir: Path, runs: list[SweepPoint] | list[RunConfig] | None = None,
                *, probe_claims: bool = True, reconcile: bool = True,
                log: Callable[[str], None] = say) -> list[PlannedRun]:
    """Each planned run with its state, reconciling results.csv with record.json files.

    A record.json newer than the results.csv row (a sweep killed before its upsert) counts;
    with `reconcile` it is also upserted now, so the table catches up without retraining.
    """
    points = plan_points(cfg, log=log) if runs is None else _as_points(runs)
    results = layout.results_path(out_dir)
    records, problems = read_results(results)
    for msg in problems:
        log(f"warning: {msg} (the rest of {layout.RESULTS_FILE} is used; the row is rewritten "
            f"when that run is next recorded)")
    by_id = {r.run_id: r for r in records}
    planned = []
    for point in points:
        p = planned_run(out_dir, point)
        rec = by_id.get(point.run_id)
        if rec is None or rec.status != "completed":
            disk = read_disk_record(p.run_dir, point.run_id, log)
            if disk is not None and (rec is None or (disk.finished_at or "") > (rec.finished_at or "")):
                rec = table_record(disk, p, out_dir)
                if reconcile:
                    upsert_record(results, rec)
        planned.append(dataclasses.replace(
            p, record=rec, state=_state_of(rec, p.run_dir, p.claim_path, probe_claims)))
    return planned


def dropped_records(out_dir: Path, planned: list[PlannedRun]) -> list[RunRecord]:
    """Rows of results.csv whose run is not in the current plan (a sweep that changed)."""
    ids = {p.run_id for p in planned}
    records, _ = read_results(layout.results_path(out_dir))
    return [r for r in records if r.run_id not in ids]


def read_disk_record(run_dir: Path, run_id: str, log: Callable[[str], None]) -> RunRecord | None:
    p = run_dir / layout.RECORD_FILE
    if not p.is_file():
        return None
    try:
        rec = read_record_json(p)
    except (OSError, ValueError, TypeError) as e:
        log(f"warning: {p}: unreadable ({e}); ignored")
        return None
    if rec.run_id != run_id:
        log(f"warning: {p}: run_id {rec.run_id!r} does not match the directory's {run_id!r}; ignored")
        return None
    return rec


def _has_checkpoint(run_dir: Path) -> bool:
    if not layout.checkpoint_dir(run_dir).is_dir():
        return False  # the common case, decided without importing torch
    from llmscale.checkpoint import has_checkpoint

    return has_checkpoint(run_dir)


def _state_of(rec: RunRecord | None, run_dir: Path, claim_path: Path, probe: bool) -> str:
    if rec is not None and rec.status == "completed":
        return "done"
    if probe and is_claimed(claim_path):
        return "running"
    if rec is not None and rec.status in FAILED_STATUSES:
        return "failed"
    if _has_checkpoint(run_dir):
        return "partial"
    if rec is not None and rec.status == "preempted":
        return "preempted"
    return "todo"


def count_states(planned: Iterable[PlannedRun]) -> dict[str, int]:
    counts = {k: 0 for k in STATES}
    for p in planned:
        counts[p.state] += 1
    return counts
