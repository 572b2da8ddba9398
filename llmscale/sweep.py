"""Sweeps: expand one config into many runs, skip finished ones, hand the rest to an executor.

    llmscale sweep CONFIG [--set ...] [--out DIR] [--devices ...] [--executor slurm]

Layout of a sweep directory DIR:

    DIR/sweep.yaml                      the resolved base config + sweep spec (identity of the sweep)
    DIR/results.csv                     one row per run (llmscale.records), upserted under a lock
    DIR/runs/<prefix>-<run_id>/         one directory per run (train_run's run_dir)
    DIR/runs/<prefix>-<run_id>.claim    per-run lock file: held while some process trains the run
    DIR/slurm/                          submitit's logs and pickles (executor slurm)

A run's state is read from results.csv and its run_dir/record.json (a process killed between
train_run returning and the upsert leaves only the latter): completed runs are skipped,
failed / diverged / oom ones retried only with `retry_failed`, preempted and partial
(checkpointed) ones resumed by train_run from their checkpoint.

Nothing here imports torch at module level: a finished sweep is recognised from files alone,
so re-running it returns at once.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from llmscale.accounting import RunAccounting, run_accounting, tokens_for_flops
from llmscale.config import (
    RunConfig,
    from_dict,
    run_identity,
    valid_keys,
    with_overrides,
)
from llmscale.errors import UserError
from llmscale.records import (
    RESULTS_FILE,
    RunRecord,
    atomic_write_text,
    read_record_json,
    read_results,
    upsert_record,
)

SWEEP_FILE = "sweep.yaml"
RUNS_DIR = "runs"
RECORD_FILE = "record.json"  # written by train_run at every terminal status
FAILED_STATUSES = ("failed", "diverged", "oom")

# Used by --dry-run to estimate time when no run of this sweep has completed yet. Deliberately
# round numbers for what a small LSTM *achieves* (well below peak): the estimate says so.
ASSUMED_FLOPS_PER_S = {"cpu": 2.0e10, "cuda": 1.0e13}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Planning


def plan_sweep(cfg: RunConfig, *, log: Callable[[str], None] = _say) -> list[RunConfig]:
    """Every run of the sweep: base config x (grid x zip x runs x seeds x budgets), then derived.

    Runs resolving to the same run_id are kept once, and `log` says how many were dropped.
    A config without a sweep section is a one-run sweep (the base run).
    """
    points = _expand_points(cfg)
    derived = _check_derived(cfg.sweep.derived)
    budgets = cfg.sweep.budgets
    out: list[RunConfig] = []
    seen: dict[str, int] = {}
    duplicates = 0
    for i, point in enumerate(points):
        run = _apply(cfg, point, derived, where=f"sweep point {i} {_show(point)}")
        if "train.flops" in point:
            run = _with_budget(run, point, budgets)
        if run.run_id in seen:
            duplicates += 1
            continue
        seen[run.run_id] = len(out)
        out.append(run)
    if duplicates:
        log(f"sweep {cfg.name!r}: {duplicates} of {len(points)} sweep points resolve to a run_id "
            f"already planned (identical resolved configs); each is run once ({len(out)} runs)")
    return out


def _expand_points(cfg: RunConfig) -> list[dict[str, Any]]:
    """The override dicts, one per sweep point, before derived values and budgets."""
    sw = cfg.sweep
    keys = set(valid_keys())

    def check_key(section: str, key: str) -> None:
        if key not in keys:
            import difflib

            close = difflib.get_close_matches(key, sorted(keys), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UserError(f"sweep.{section}: unknown config key {key!r}{hint} "
                            f"(keys are dotted paths such as model.hidden_dim or train.lr)")
        if key.startswith("sweep.") or key == "name":
            raise UserError(f"sweep.{section}: {key!r} cannot be swept (it does not change a run)")

    for key, values in sw.grid.items():
        check_key("grid", key)
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep.grid.{key}: expected a non-empty list of values, got {values!r}")
    zip_len = None
    for key, values in sw.zip.items():
        check_key("zip", key)
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep.zip.{key}: expected a non-empty list of values, got {values!r}")
        if zip_len is not None and len(values) != zip_len:
            lens = ", ".join(f"{k}: {len(v)}" for k, v in sw.zip.items())
            raise UserError(f"sweep.zip: paired axes must have equal lengths, got {lens}")
        zip_len = len(values)
    for i, run in enumerate(sw.runs):
        if not isinstance(run, dict) or not run:
            raise UserError(f"sweep.runs[{i}]: expected a non-empty mapping of key: value, "
                            f"got {run!r}")
        for key in run:
            check_key(f"runs[{i}]", str(key))
    if "train.seed" in sw.grid and sw.seeds:
        raise UserError("sweep.seeds and sweep.grid.train.seed both set the seed; keep one")
    if sw.budgets and ("train.flops" in sw.grid or "train.tokens" in sw.grid):
        raise UserError("sweep.budgets sets train.flops and train.tokens; do not also grid them")

    # grid (cartesian) x zip (paired rows) x runs (explicit) x seeds x budgets
    grid_keys = list(sw.grid)
    axes: list[list[dict[str, Any]]] = [
        [dict(zip(grid_keys, combo, strict=True)) for combo in itertools.product(*sw.grid.values())]]
    if sw.zip:
        zip_keys = list(sw.zip)
        axes.append([dict(zip(zip_keys, row, strict=True)) for row in zip(*sw.zip.values(), strict=True)])
    if sw.runs:
        axes.append([{str(k): v for k, v in run.items()} for run in sw.runs])
    if sw.seeds:
        axes.append([{"train.seed": s} for s in sw.seeds])
    if sw.budgets:
        axes.append([{"train.flops": float(b)} for b in sw.budgets])
    points = []
    for parts in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in parts:
            point.update(part)  # later axes win: an explicit run overrides the grid
        points.append(point)
    return points


def _check_derived(derived: dict[str, str]) -> list[tuple[str, str]]:
    keys = set(valid_keys())
    for target, source in derived.items():
        for what, key in (("key", target), ("source", source)):
            if not isinstance(key, str) or key not in keys:
                raise UserError(f"sweep.derived: unknown {what} {key!r} in "
                                f"{target}: {source} (both sides are dotted config keys, "
                                f"e.g. model.embedding_dim: model.hidden_dim)")
    return list(derived.items())


def _get(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return list(node) if isinstance(node, tuple) else node


def _apply(base: RunConfig, point: dict[str, Any], derived: list[tuple[str, str]],
           where: str) -> RunConfig:
    """Overrides first, then each derived key copies its source's final value (in order)."""
    try:
        run = with_overrides(base, point)
        for target, source in derived:
            run = with_overrides(run, {target: _get(run, source)})
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return run


def _with_budget(run: RunConfig, point: dict[str, Any], budgets: list[float]) -> RunConfig:
    """A FLOP budget buys this shape tokens_for_flops tokens; at least one batch is required."""
    flops = point["train.flops"]
    tokens = tokens_for_flops(run.vocab_size, run.model, flops)
    batch_tokens = run.train.batch_size * run.train.seq_len
    if tokens < batch_tokens:
        i = budgets.index(flops)
        raise UserError(
            f"sweep.budgets[{i}]: {flops:.3g} FLOPs buys {tokens:,} tokens for "
            f"{_shape(run)} ({_show(point)}), less than one batch "
            f"(train.batch_size x train.seq_len = {batch_tokens:,} tokens); "
            f"raise the budget to >= {batch_tokens * run_accounting(run).flops_per_token:.3g}")
    # train.tokens mirrors the accounting so the plan, the record and the trainer agree.
    return with_overrides(run, {"train.tokens": tokens})


def _show(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in point.items()) + "}"


def _shape(run: RunConfig) -> str:
    m = run.model
    emb = "" if m.embedding_dim == m.hidden_dim else f" e{m.embedding_dim}"
    return f"h{m.hidden_dim} l{m.num_layers}{emb}"


def run_dir_name(run: RunConfig) -> str:
    """`h128-l2-3f9a0c1e2b4d`: readable shape first, the run_id makes it unique."""
    m = run.model
    emb = "" if m.embedding_dim == m.hidden_dim else f"-e{m.embedding_dim}"
    return f"h{m.hidden_dim}-l{m.num_layers}{emb}-{run.run_id}"


# --------------------------------------------------------------------------------------------
# The sweep directory: identity, state of each run


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
              "# A different sweep in this directory is refused unless --force.\n")
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def load_sweep_config(sweep_dir: Path) -> RunConfig:
    p = sweep_dir / SWEEP_FILE
    if not p.is_file():
        raise UserError(f"{str(sweep_dir)!r} is not a sweep directory (no {SWEEP_FILE}); "
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


def claim_sweep_dir(cfg: RunConfig, out_dir: Path, force: bool) -> None:
    """Write DIR/sweep.yaml, refusing a directory that holds a different sweep unless `force`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / SWEEP_FILE
    mine = sweep_identity(cfg)
    other: str | None = None
    if p.is_file():
        try:
            theirs = sweep_identity(load_sweep_config(out_dir))
        except UserError as e:
            theirs, other = None, f"its {SWEEP_FILE} is unreadable ({e})"
        if theirs is not None and theirs != mine:
            diff = [k for k in ("name", "base", "sweep") if theirs[k] != mine[k]]
            other = (f"it holds sweep {theirs['name']!r} whose "
                     f"{' and '.join('base config' if k == 'base' else k for k in diff)} differ")
    else:
        records, _ = read_results(out_dir / RESULTS_FILE)
        names = sorted({r.sweep for r in records if r.sweep and r.sweep != cfg.name})
        if names:
            other = f"its {RESULTS_FILE} holds runs of sweep(s) {', '.join(map(repr, names))}"
    if other is not None:
        if not force:
            raise UserError(f"output directory {str(out_dir)!r} is in use: {other}; use another "
                            f"--out, or --force to add this sweep's runs to it")
        _say(f"--force: {out_dir}: {other}; writing this sweep's {SWEEP_FILE} over it")
    if not p.is_file() or p.read_text(encoding="utf-8") != _sweep_doc(cfg):
        atomic_write_text(p, _sweep_doc(cfg))


@dataclass(frozen=True)
class PlannedRun:
    cfg: RunConfig
    run_dir: Path
    claim_path: Path
    accounting: RunAccounting
    state: str  # done | failed | partial | preempted | todo | running
    record: RunRecord | None  # the latest known record (results.csv or record.json)

    @property
    def run_id(self) -> str:
        return self.cfg.run_id


def _claim_lock(claim_path: Path) -> FileLock:
    return FileLock(str(claim_path), timeout=0)


def _is_claimed(claim_path: Path) -> bool:
    """True when another process holds the run's claim (probe without waiting)."""
    if not claim_path.exists():
        return False
    lock = _claim_lock(claim_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def _has_checkpoint(run_dir: Path) -> bool:
    if not (run_dir / "checkpoint").is_dir():
        return False  # the common case, decided without importing torch
    from llmscale.checkpoint import has_checkpoint

    return has_checkpoint(run_dir)


def sweep_state(cfg: RunConfig, out_dir: Path, runs: list[RunConfig] | None = None,
                *, probe_claims: bool = True, reconcile: bool = True,
                log: Callable[[str], None] = _say) -> list[PlannedRun]:
    """Each planned run with its state, reconciling results.csv with record.json files.

    A record.json newer than the results.csv row (a sweep killed before its upsert) counts;
    with `reconcile` it is also upserted now, so the table catches up without retraining.
    """
    if runs is None:
        runs = plan_sweep(cfg, log=log)
    results = out_dir / RESULTS_FILE
    records, problems = read_results(results)
    for msg in problems:
        log(f"warning: {msg} (the rest of {RESULTS_FILE} is used; the row is rewritten "
            f"when that run is next recorded)")
    by_id = {r.run_id: r for r in records}
    planned = []
    for run in runs:
        run_dir = out_dir / RUNS_DIR / run_dir_name(run)
        claim_path = out_dir / RUNS_DIR / f"{run_dir_name(run)}.claim"
        rec = by_id.get(run.run_id)
        if rec is None or rec.status != "completed":
            disk = _read_disk_record(run_dir, run.run_id, log)
            if disk is not None and (rec is None or (disk.finished_at or "") > (rec.finished_at or "")):
                if reconcile:
                    upsert_record(results, disk)
                rec = disk
        planned.append(PlannedRun(cfg=run, run_dir=run_dir, claim_path=claim_path,
                                  accounting=run_accounting(run),
                                  state=_state_of(rec, run_dir, claim_path, probe_claims),
                                  record=rec))
    return planned


def _read_disk_record(run_dir: Path, run_id: str, log: Callable[[str], None]) -> RunRecord | None:
    p = run_dir / RECORD_FILE
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


def _state_of(rec: RunRecord | None, run_dir: Path, claim_path: Path, probe: bool) -> str:
    if rec is not None and rec.status == "completed":
        return "done"
    if probe and _is_claimed(claim_path):
        return "running"
    if rec is not None and rec.status in FAILED_STATUSES:
        return "failed"
    if _has_checkpoint(run_dir):
        return "partial"
    if rec is not None and rec.status == "preempted":
        return "preempted"
    return "todo"


# --------------------------------------------------------------------------------------------
# Running


def run_sweep(cfg: RunConfig, out_dir: str | Path, *, devices: str | list[str] | None = None,
              runs_per_device: int = 1, executor: str | None = None, retry_failed: bool = False,
              force: bool = False, progress: bool = True,
              slurm_cluster: str | None = None) -> list[RunRecord]:
    """Train every run of the sweep that is not finished; return the records of all runs.

    devices: None = in-process on train_run's "auto" device; "cpu", "auto" (one worker per
    GPU) or a comma-separated list ("cuda:0,cuda:1"; "cpu,cpu" runs two CPU workers).
    executor: "local" | "slurm" (default cfg.sweep.executor). slurm_cluster is passed to
    submitit.AutoExecutor (None: SLURM; "local": submitit's local executor, for tests).
    Runs held by another process (its claim lock) are skipped, not waited for.
    """
    out = Path(out_dir)
    executor = executor or cfg.sweep.executor
    if executor not in ("local", "slurm"):
        raise UserError(f"executor {executor!r}: allowed: local or slurm")
    if runs_per_device < 1:
        raise UserError(f"--runs-per-device {runs_per_device}: allowed: an integer >= 1")
    runs = plan_sweep(cfg)
    claim_sweep_dir(cfg, out, force)
    planned = sweep_state(cfg, out, runs)
    todo = [p for p in planned
            if p.state in ("todo", "partial", "preempted") or (retry_failed and p.state == "failed")]
    skipped_failed = sum(p.state == "failed" for p in planned) if not retry_failed else 0
    busy = sum(p.state == "running" for p in planned)
    done = sum(p.state == "done" for p in planned)
    if progress or todo:
        _say(f"sweep {cfg.name!r}: {len(planned)} runs: {done} done, {len(todo)} to train"
             + (f", {busy} running elsewhere (skipped)" if busy else "")
             + (f", {skipped_failed} failed (not retried; --retry-failed)" if skipped_failed else ""))
    if todo:
        if executor == "slurm":
            _run_slurm(cfg, out, todo, slurm_cluster, progress)
        else:
            slots = _device_slots(devices, runs_per_device)
            if len(slots) <= 1:
                _run_in_process(out, todo, slots[0] if slots else "auto", progress)
            else:
                _run_pool(out, todo, slots, progress)
        planned = sweep_state(cfg, out, runs, probe_claims=False)
    return [p.record for p in planned if p.record is not None]


def _device_slots(devices: str | list[str] | None, runs_per_device: int) -> list[str]:
    if devices is None:
        return ["auto"] * runs_per_device if runs_per_device > 1 else []
    names = devices if isinstance(devices, list) else [d.strip() for d in devices.split(",")]
    names = [d for d in names if d]
    if names == ["auto"]:
        import torch

        n = torch.cuda.device_count()
        names = [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
    for d in names:
        if not (d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit())):
            raise UserError(f"--devices {devices!r}: {d!r} is not a device; allowed: auto, cpu, "
                            f"or a comma-separated list such as cuda:0,cuda:1")
    return [d for d in names for _ in range(runs_per_device)]


class _SweepProgress:
    """Sweep-level bar: tokens done (so the ETA weighs big runs), runs done in the postfix."""

    def __init__(self, todo: list[PlannedRun], enabled: bool):
        from tqdm import tqdm

        self.n = len(todo)
        self.k = 0
        self.t0 = time.perf_counter()
        self.total_tokens = sum(p.accounting.tokens for p in todo)
        self.tokens = 0
        self.bar = tqdm(total=self.total_tokens, unit="tok", unit_scale=True, desc="sweep",
                        disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True)
        self.bar.set_postfix_str(f"runs 0/{self.n}")

    def done(self, p: PlannedRun, rec: RunRecord | None, note: str = "") -> None:
        self.k += 1
        self.tokens += p.accounting.tokens
        self.bar.update(p.accounting.tokens)
        self.bar.set_postfix_str(f"runs {self.k}/{self.n}")
        if self.bar.disable:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.tokens * (self.total_tokens - self.tokens) if self.tokens else 0.0
            status = rec.status if rec is not None else "skipped"
            _say(f"[{self.k}/{self.n}] {p.run_dir.name}: {status}{note} | "
                 f"{self.tokens:,}/{self.total_tokens:,} tokens, ETA {eta:.0f}s")

    def close(self) -> None:
        self.bar.close()


def _train_claimed(run_cfg: RunConfig, run_dir: Path, claim_path: Path, results: Path,
                   device: str, progress: bool) -> tuple[RunRecord | None, str]:
    """Train one run unless another process holds it; upsert its record.

    Returns (record, how): how is "trained", "claimed" (another process holds the run: skipped,
    record None) or "done" (another process finished it after this sweep looked: not retrained).
    """
    claim_path.parent.mkdir(parents=True, exist_ok=True)
    lock = _claim_lock(claim_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None, "claimed"
    try:
        done = _read_disk_record(run_dir, run_cfg.run_id, _say)
        if done is not None and done.status == "completed":
            upsert_record(results, done)
            return done, "done"
        from llmscale.train import train_run

        rec = train_run(run_cfg, run_dir, device=device, progress=progress)
        upsert_record(results, rec)
        return rec, "trained"
    finally:
        lock.release()


_NOTES = {"trained": "", "claimed": " (claimed by another process)",
          "done": " (finished by another process: not retrained)"}


def _run_in_process(out: Path, todo: list[PlannedRun], device: str, progress: bool) -> None:
    bar = _SweepProgress(todo, progress)
    try:
        for p in todo:
            rec, how = _train_claimed(p.cfg, p.run_dir, p.claim_path, out / RESULTS_FILE, device,
                                      progress=progress and sys.stderr.isatty())
            bar.done(p, rec, _NOTES[how])
            if rec is not None and rec.status == "preempted":
                # SIGTERM/SIGINT reached train_run, which checkpointed: the job is being stopped,
                # so stop here too rather than start the next run.
                _say(f"sweep stopped: {p.run_dir.name} was preempted and checkpointed; "
                     f"run the same command again to resume")
                break
    finally:
        bar.close()


def _pool_worker(device: str, threads: int, tasks, results, out: str) -> None:
    """One worker process: pull (index, config dict, run_dir, claim) until None, train each."""
    if device == "cpu" or device == "auto":
        # Several CPU workers share the cores; without this each would start one thread per core.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)
    while True:
        item = tasks.get()
        if item is None:
            return
        index, cfg_dict, run_dir, claim = item
        try:
            rec, how = _train_claimed(from_dict(cfg_dict), Path(run_dir), Path(claim),
                                      Path(out) / RESULTS_FILE, device, progress=False)
            results.put((index, rec.to_dict() if rec is not None else None, how))
            if rec is not None and rec.status == "preempted":
                return  # this worker was signalled: take no further runs
        except UserError as e:
            results.put((index, None, ("user", f"{e}")))
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which goes on
            results.put((index, None, ("bug", f"{type(e).__name__}: {e}")))


def _run_pool(out: Path, todo: list[PlannedRun], slots: list[str], progress: bool) -> None:
    """One spawned worker per slot, started once, pulling runs from a shared queue."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after CUDA init is unsafe; spawn also keeps workers clean
    tasks, results = ctx.Queue(), ctx.Queue()
    for i, p in enumerate(todo):
        tasks.put((i, p.cfg.to_dict(), str(p.run_dir), str(p.claim_path)))
    n_cpu_slots = sum(s in ("cpu", "auto") for s in slots) or 1
    threads = max(1, (os.cpu_count() or 1) // n_cpu_slots)
    # Not daemonic: a daemonic process may not start children, and a trainer may need to.
    workers = [ctx.Process(target=_pool_worker, args=(s, threads, tasks, results, str(out)))
               for s in slots]
    for _ in workers:
        tasks.put(None)
    for w in workers:
        w.start()
    bar = _SweepProgress(todo, progress)
    errors: list[tuple[str, str]] = []
    preempted = False
    try:
        for _ in todo:
            item = None
            while item is None:
                try:
                    item = results.get(timeout=1.0)
                except queue.Empty:
                    # Workers stop after a preemption, or were killed from outside (OOM killer):
                    # either way no answer is coming, so do not wait for one.
                    if not any(w.is_alive() for w in workers):
                        break
            if item is None:
                if not preempted:
                    raise RuntimeError("all sweep workers exited with runs unfinished; "
                                       "rerun the sweep to resume them")
                _say("sweep stopped: runs were preempted and checkpointed; run the same "
                     "command again to resume")
                break
            index, rec_dict, how = item
            rec = RunRecord(**rec_dict) if rec_dict is not None else None
            preempted = preempted or (rec is not None and rec.status == "preempted")
            if isinstance(how, tuple):  # (kind, message): the worker caught an exception
                errors.append((how[0], f"{todo[index].run_dir.name}: {how[1]}"))
                bar.done(todo[index], rec, f" (error: {how[1]})")
            else:
                bar.done(todo[index], rec, _NOTES[how])
    finally:
        bar.close()
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()
    for _, msg in errors:
        _say(f"error: {msg}")
    # A user mistake (bad data path, ...) fails every run the same way: say it as one.
    user = [msg for kind, msg in errors if kind == "user"]
    if user:
        raise UserError(user[0])
    if errors:
        raise RuntimeError(f"{len(errors)} run(s) crashed in a worker; first: {errors[0][1]}")


# --------------------------------------------------------------------------------------------
# SLURM through submitit


class SweepTask:
    """One sweep point as a submitit job: train, upsert; on preemption/timeout, requeue itself.

    submitit calls `checkpoint` when SLURM signals the end of the allocation; returning a
    DelayedSubmission of the same call requeues the task, and train_run resumes from the
    run's checkpoint (its own signal handling saves one at that point).
    """

    def __call__(self, cfg_dict: dict[str, Any], run_dir: str, claim: str, out: str) -> dict | None:
        import submitit

        cfg = from_dict(cfg_dict)
        device = "auto"
        if submitit.JobEnvironment().num_tasks > 1:
            # gpus_per_run > 1: one task per GPU on the node; train_run does DDP from the env.
            dist = submitit.helpers.TorchDistributedEnvironment().export()
            device = f"cuda:{dist.local_rank}"
            if dist.rank != 0:
                from llmscale.train import train_run

                return train_run(cfg, Path(run_dir), device=device, progress=False).to_dict()
        rec, _ = _train_claimed(cfg, Path(run_dir), Path(claim), Path(out) / RESULTS_FILE,
                                device, progress=False)
        return rec.to_dict() if rec is not None else None

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("executor slurm needs submitit: pip install 'llmscale[slurm]'") from None
    return submitit


def _run_slurm(cfg: RunConfig, out: Path, todo: list[PlannedRun], cluster: str | None,
               progress: bool) -> None:
    submitit = _import_submitit()
    if cluster is None:
        if shutil.which("sbatch") is None:
            raise UserError("executor slurm: sbatch is not on PATH (not a SLURM login node); "
                            "use --executor local here")
        cluster = "slurm"
    s = cfg.sweep.slurm
    ex = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster=cluster)
    params: dict[str, Any] = dict(
        name=f"llmscale-{cfg.name}", timeout_min=s.time_min, tasks_per_node=s.gpus_per_run,
        gpus_per_node=s.gpus_per_run, cpus_per_task=s.cpus_per_task, mem_gb=s.mem_gb, nodes=1)
    if cluster == "local":
        params.pop("gpus_per_node")  # the local executor would pin CUDA_VISIBLE_DEVICES
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.max_parallel:
        params["slurm_array_parallelism"] = s.max_parallel
    ex.update_parameters(**params)
    task = SweepTask()
    jobs = ex.map_array(task, [p.cfg.to_dict() for p in todo], [str(p.run_dir) for p in todo],
                        [str(p.claim_path) for p in todo], [str(out)] * len(todo))
    _say(f"submitted {len(jobs)} array tasks ({cluster}); logs in {out / 'slurm'}")
    bar = _SweepProgress(todo, progress)
    pending = dict(enumerate(jobs))
    try:
        while pending:
            for i, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[i]
                try:
                    res = job.results()[0]
                    rec = RunRecord(**res) if res else None
                    bar.done(todo[i], rec)
                except Exception as e:  # noqa: BLE001 - a failed task is reported, others go on
                    bar.done(todo[i], None, f" (job {job.job_id} failed: "
                                            f"{str(e).strip().splitlines()[-1][:200]})")
            if pending:
                time.sleep(0.5)
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# Dry run and status


def _assumed_device(devices: str | None) -> str:
    if devices and "cuda" in devices:
        return "cuda"
    if devices is None or devices == "auto":
        return "cuda" if shutil.which("nvidia-smi") else "cpu"
    return "cpu"


def format_plan(planned: list[PlannedRun], devices: str | None = None) -> str:
    """The --dry-run table, with a footnote saying how the time is estimated."""
    measured = [r.record.tokens_per_s * r.record.flops_per_token for r in planned
                if r.record is not None and r.record.status == "completed"
                and r.record.tokens_per_s and r.record.flops_per_token]
    if measured:
        rate = sorted(measured)[len(measured) // 2]
        how = (f"estimated time = FLOPs / {rate:.3g} FLOP/s, the median achieved by "
               f"{len(measured)} completed run(s) of this sweep")
    else:
        dev = _assumed_device(devices)
        rate = ASSUMED_FLOPS_PER_S[dev]
        how = (f"estimated time = FLOPs / {rate:.3g} FLOP/s, an assumed achieved rate on "
               f"{dev} (no completed runs to measure from yet)")
    header = ("run_dir", "shape", "lr", "seed", "params_nonemb", "tokens", "FLOPs", "est_time",
              "status")
    rows = []
    for p in planned:
        a = p.accounting
        rows.append((p.run_dir.name, _shape(p.cfg), f"{p.cfg.train.lr:g}", str(p.cfg.train.seed),
                     f"{a.params_nonembedding:,}", f"{a.tokens:,}", f"{a.flops:.3g}",
                     _fmt_time(a.flops / rate), p.state))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    total_flops = sum(p.accounting.flops for p in planned)
    todo_flops = sum(p.accounting.flops for p in planned if p.state != "done")
    counts = _counts(planned)
    lines.append(f"{len(planned)} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); "
                 f"{total_flops:.3g} FLOPs in all, {todo_flops:.3g} left, about "
                 f"{_fmt_time(todo_flops / rate)} left")
    lines.append(f"({how})")
    return "\n".join(lines)


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _counts(planned: Iterable[PlannedRun]) -> dict[str, int]:
    counts = {k: 0 for k in ("done", "running", "failed", "partial", "preempted", "todo")}
    for p in planned:
        counts[p.state] += 1
    return counts


def format_status(sweep_dir: Path) -> str:
    cfg = load_sweep_config(sweep_dir)
    planned = sweep_state(cfg, sweep_dir, reconcile=False)
    counts = _counts(planned)
    lines = [f"sweep {cfg.name!r} in {sweep_dir}: {len(planned)} runs: "
             + ", ".join(f"{v} {k}" for k, v in counts.items())]
    tokens_done = sum(p.accounting.tokens for p in planned if p.state == "done")
    tokens_all = sum(p.accounting.tokens for p in planned)
    lines.append(f"tokens: {tokens_done:,} of {tokens_all:,} trained in completed runs")
    for p in planned:
        if p.state == "failed":
            assert p.record is not None
            reason = p.record.error or "(no reason recorded)"
            lines.append(f"  {p.record.status}: {p.run_dir.name}: {reason}")
        elif p.state in ("running", "partial", "preempted"):
            lines.append(f"  {p.state}: {p.run_dir.name}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI entry points (llmscale.cli calls these)


def _cli_overrides(args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, key in (("partition", "sweep.slurm.partition"), ("time_min", "sweep.slurm.time_min"),
                      ("gpus_per_run", "sweep.slurm.gpus_per_run"), ("mem_gb", "sweep.slurm.mem_gb"),
                      ("executor", "sweep.executor")):
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    return out


def sweep_cli(cfg: RunConfig, args: Any) -> int:
    overrides = _cli_overrides(args)
    if overrides:
        cfg = with_overrides(cfg, overrides)
    if cfg.sweep.executor == "local" and getattr(args, "gpus_per_run", None) not in (None, 1):
        raise UserError(f"--gpus-per-run {args.gpus_per_run}: a run spanning GPUs needs "
                        f"--executor slurm (or `torchrun ... llmscale train` for one run); the "
                        f"local executor runs one device per run")
    out = Path(args.out or cfg.output.dir)
    if args.dry_run:
        runs = plan_sweep(cfg)
        planned = sweep_state(cfg, out, runs, reconcile=False) if out.is_dir() else [
            PlannedRun(cfg=r, run_dir=out / RUNS_DIR / run_dir_name(r),
                       claim_path=out / RUNS_DIR / f"{run_dir_name(r)}.claim",
                       accounting=run_accounting(r), state="todo", record=None) for r in runs]
        print(format_plan(planned, args.devices))
        return 0
    results_before = _mtime(out / RESULTS_FILE)
    records = run_sweep(cfg, out, devices=args.devices, runs_per_device=args.runs_per_device,
                        executor=cfg.sweep.executor, retry_failed=args.retry_failed,
                        force=args.force, progress=True)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    _say(f"results: {out / RESULTS_FILE} ({', '.join(f'{v} {k}' for k, v in counts.items())})")
    if not args.no_analysis:
        _analyse(out, changed=_mtime(out / RESULTS_FILE) != results_before)
    return 0


def _mtime(p: Path) -> float | None:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return None


def _analyse(out: Path, changed: bool) -> None:
    """Fit, plots and report; skipped when nothing changed since the last analysis.

    "Last analysis" is the newest of fit.json and report.md (a sweep too small for any law
    writes a report but no fit.json), compared with results.csv.
    """
    stamps = [t for t in (_mtime(out / "fit.json"), _mtime(out / "report.md")) if t is not None]
    results = _mtime(out / RESULTS_FILE)
    if not changed and stamps and results is not None and max(stamps) >= results:
        return
    try:
        from llmscale.report import build_all
    except ImportError as e:
        _say(f"warning: analysis skipped: llmscale.report is not available ({e})")
        return
    try:
        build_all(out)
    except Exception as e:  # noqa: BLE001 - the sweep's results stand even if a fit cannot be made
        _say(f"warning: analysis failed ({type(e).__name__}: {e}); results.csv is complete, "
             f"run `llmscale report {out}` later")


def status_cli(sweep_dir: Path) -> int:
    print(format_status(Path(sweep_dir)))
    return 0
