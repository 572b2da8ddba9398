"""Executors: where the planned runs of a sweep train.

- in-process: one run after another in this process (the default on one CPU or GPU);
- pool: one spawned worker per device slot (`--devices cuda:0,cuda:1`, `--runs-per-device`);
- SLURM: a job array through submitit, one sweep point per array task, requeued on
  preemption (its own section below).

Every executor trains a run through `train_claimed`: take the run's claim (skip it when another
process holds it), train, upsert the record into results.csv. Nothing here imports torch at
module level.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from filelock import Timeout

from llmscale import layout
from llmscale.config import RunConfig, check_device_name, from_dict
from llmscale.errors import UserError
from llmscale.records import RunRecord, upsert_record
from llmscale.sweep.plan import SweepPoint, say
from llmscale.sweep.state import (
    PlannedRun,
    claim_lock,
    planned_run,
    read_disk_record,
    table_record,
)

# --------------------------------------------------------------------------------------------
# Devices


def device_slots(devices: str | list[str] | None, runs_per_device: int) -> list[str]:
    """One entry per parallel worker; [] means in-process on train_run's auto device."""
    if runs_per_device < 1:
        raise UserError(f"--runs-per-device {runs_per_device}: allowed: an integer >= 1")
    if devices is None:
        return ["auto"] * runs_per_device if runs_per_device > 1 else []
    names = devices if isinstance(devices, list) else [d.strip() for d in devices.split(",")]
    names = [d for d in names if d]
    for d in names:
        check_device_name(d, "--devices")
    if names == ["auto"]:
        import torch

        n = torch.cuda.device_count()
        names = [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
    return [d for d in names for _ in range(runs_per_device)]


# --------------------------------------------------------------------------------------------
# One run, claimed


def payload(p: PlannedRun) -> dict[str, Any]:
    """What a worker process needs to rebuild the PlannedRun (plain, picklable data)."""
    return {"cfg": p.cfg.to_dict(), "point": p.point.point, "flops_budget": p.point.flops_budget}


def from_payload(out: Path, data: dict[str, Any]) -> PlannedRun:
    return planned_run(out, SweepPoint(cfg=from_dict(data["cfg"]), point=data["point"],
                                       flops_budget=data["flops_budget"]))


def train_claimed(p: PlannedRun, out: Path, device: str,
                  progress: bool) -> tuple[RunRecord | None, str]:
    """Train one run unless another process holds it; upsert its record.

    Returns (record, how): how is "trained", "claimed" (another process holds the run: skipped,
    record None) or "done" (another process finished it after this sweep looked: not retrained).
    """
    results = layout.results_path(out)
    p.claim_path.parent.mkdir(parents=True, exist_ok=True)
    lock = claim_lock(p.claim_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None, "claimed"
    try:
        done = read_disk_record(p.run_dir, p.run_id, say)
        if done is not None and done.status == "completed":
            done = table_record(done, p, out)
            upsert_record(results, done)
            return done, "done"
        from llmscale.train import train_run

        rec = train_run(p.cfg, p.run_dir, device=device, progress=progress,
                        sweep_point=p.point.point or None, flops_budget=p.point.flops_budget)
        rec = table_record(rec, p, out)
        upsert_record(results, rec)
        return rec, "trained"
    finally:
        lock.release()


NOTES = {"trained": "", "claimed": " (claimed by another process)",
         "done": " (finished by another process: not retrained)"}


class SweepProgress:
    """Sweep-level bar: tokens done (so the ETA weighs big runs), runs done in the postfix.
    Off a terminal, one line per finished run instead."""

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
            say(f"[{self.k}/{self.n}] {p.run_dir.name}: {status}{note} | "
                f"{self.tokens:,}/{self.total_tokens:,} tokens, ETA {eta:.0f}s")

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------------------------------
# In-process


def run_in_process(out: Path, todo: list[PlannedRun], device: str, progress: bool) -> None:
    bar = SweepProgress(todo, progress)
    try:
        for p in todo:
            rec, how = train_claimed(p, out, device, progress=progress and sys.stderr.isatty())
            bar.done(p, rec, NOTES[how])
            if rec is not None and rec.status == "preempted":
                # SIGTERM/SIGINT reached train_run, which checkpointed: the job is being stopped,
                # so stop here too rather than start the next run.
                say(f"sweep stopped: {p.run_dir.name} was preempted and checkpointed; "
                    f"run the same command again to resume")
                break
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# Pool: one spawned worker per device slot


def _pool_worker(device: str, threads: int, tasks, results, out: str, log_level: int) -> None:
    """One worker process: pull (index, payload) until None, train each."""
    from llmscale.logs import configure_logging

    configure_logging(logging.getLevelName(log_level))
    if device in ("cpu", "auto"):
        # Several CPU workers share the cores; without this each would start one thread per core.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    from llmscale.hardware import pin_worker_to_device

    device = pin_worker_to_device(device)  # before anything initialises CUDA
    if device == "cpu":
        torch.set_num_threads(threads)
    while True:
        item = tasks.get()
        if item is None:
            return
        index, data = item
        try:
            rec, how = train_claimed(from_payload(Path(out), data), Path(out), device,
                                     progress=False)
            results.put((index, rec.to_dict() if rec is not None else None, how))
            if rec is not None and rec.status == "preempted":
                return  # this worker was signalled: take no further runs
        except UserError as e:
            results.put((index, None, ("user", f"{e}")))
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which goes on
            results.put((index, None, ("bug", f"{type(e).__name__}: {e}")))


def run_pool(out: Path, todo: list[PlannedRun], slots: list[str], progress: bool) -> None:
    """One spawned worker per slot, started once, pulling runs from a shared queue."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after CUDA init is unsafe; spawn also keeps workers clean
    tasks, results = ctx.Queue(), ctx.Queue()
    for i, p in enumerate(todo):
        tasks.put((i, payload(p)))
    n_cpu_slots = sum(s in ("cpu", "auto") for s in slots) or 1
    threads = max(1, (os.cpu_count() or 1) // n_cpu_slots)
    level = logging.getLogger("llmscale").getEffectiveLevel()
    # Not daemonic: a daemonic process may not start children, and a trainer may need to.
    workers = [ctx.Process(target=_pool_worker, args=(s, threads, tasks, results, str(out), level))
               for s in slots]
    for _ in workers:
        tasks.put(None)
    for w in workers:
        w.start()
    bar = SweepProgress(todo, progress)
    errors: list[tuple[str, str]] = []
    try:
        errors = _collect(todo, workers, results, bar)
    finally:
        bar.close()
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()
    for _, msg in errors:
        say(f"error: {msg}")
    # A user mistake (bad data path, ...) fails every run the same way: say it as one.
    user = [msg for kind, msg in errors if kind == "user"]
    if user:
        raise UserError(user[0])
    if errors:
        raise RuntimeError(f"{len(errors)} run(s) crashed in a worker; first: {errors[0][1]}")


def _collect(todo: list[PlannedRun], workers, results, bar: SweepProgress) -> list[tuple[str, str]]:
    """Wait for one answer per run; stop early when every worker has exited."""
    errors: list[tuple[str, str]] = []
    preempted = False
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
            say("sweep stopped: runs were preempted and checkpointed; run the same "
                "command again to resume")
            break
        index, rec_dict, how = item
        rec = RunRecord(**rec_dict) if rec_dict is not None else None
        preempted = preempted or (rec is not None and rec.status == "preempted")
        if isinstance(how, tuple):  # (kind, message): the worker caught an exception
            errors.append((how[0], f"{todo[index].run_dir.name}: {how[1]}"))
            bar.done(todo[index], rec, f" (error: {how[1]})")
        else:
            bar.done(todo[index], rec, NOTES[how])
    return errors


# --------------------------------------------------------------------------------------------
# SLURM through submitit


class SweepTask:
    """One sweep point as a submitit job: train, upsert; on preemption/timeout, requeue itself.

    submitit calls `checkpoint` when SLURM signals the end of the allocation; returning a
    DelayedSubmission of the same call requeues the task, and train_run resumes from the
    run's checkpoint (its own signal handling saves one at that point).
    """

    def __call__(self, data: dict[str, Any], out: str) -> dict | None:
        import submitit

        from llmscale.logs import configure_logging

        configure_logging("info")
        p = from_payload(Path(out), data)
        device = "auto"
        if submitit.JobEnvironment().num_tasks > 1:
            # gpus_per_run > 1: one task per GPU on the node; train_run does DDP from the env.
            dist = submitit.helpers.TorchDistributedEnvironment().export()
            device = f"cuda:{dist.local_rank}"
            if dist.rank != 0:
                from llmscale.train import train_run

                return train_run(p.cfg, p.run_dir, device=device, progress=False).to_dict()
        rec, _ = train_claimed(p, Path(out), device, progress=False)
        return rec.to_dict() if rec is not None else None

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("executor slurm needs submitit: pip install 'llmscale[slurm]'") from None
    from llmscale.logs import quiet_submitit

    quiet_submitit()
    return submitit


def run_slurm(cfg: RunConfig, out: Path, todo: list[PlannedRun], cluster: str | None,
              progress: bool) -> None:
    submitit = _import_submitit()
    if cluster is None:
        if shutil.which("sbatch") is None:
            raise UserError("executor slurm: sbatch is not on PATH (not a SLURM login node); "
                            "use --executor local here")
        cluster = "slurm"
    s = cfg.sweep.slurm
    ex = submitit.AutoExecutor(folder=str(out / layout.SLURM_DIR / "%j"), cluster=cluster)
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
    jobs = ex.map_array(task, [payload(p) for p in todo], [str(out)] * len(todo))
    say(f"submitted {len(jobs)} array tasks ({cluster}); logs in {out / layout.SLURM_DIR}")
    bar = SweepProgress(todo, progress)
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
