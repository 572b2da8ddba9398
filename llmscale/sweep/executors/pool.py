"""The pool executor: one spawned worker per device slot (`--devices cuda:0,cuda:1`,
`--runs-per-device k` or `auto`), started once, pulling runs from a shared queue.

A worker pays its process's start-up (spawn, imports, the CUDA context, cuBLAS and cuDNN) once,
before its first run (`hardware.warm_up`), and says how long that took; the runs it then trains
bill only their own set-up."""

from __future__ import annotations

import logging
import os
import queue
import time
from pathlib import Path

from llmscale.errors import UserError
from llmscale.records import RunRecord
from llmscale.sweep import estimate as est
from llmscale.sweep import slots
from llmscale.sweep.executors.common import (
    NOTES,
    SweepProgress,
    from_payload,
    payload,
    train_claimed,
)
from llmscale.sweep.plan import say
from llmscale.sweep.state import PlannedRun


def _pool_worker(device: str, threads: int, tasks, results, out: str, log_level: int,
                 started: float) -> None:
    """One worker process: warm its device up once, say so, then pull (index, payload) until
    None and train each."""
    from llmscale.logs import configure_logging

    configure_logging(logging.getLevelName(log_level))
    if device == "cpu":
        # Several CPU workers share the cores; without this each would start one thread per core.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    from llmscale.hardware import pin_worker_to_device, warm_up

    slot = device
    device = pin_worker_to_device(device)  # before anything initialises CUDA
    if device == "cpu":
        torch.set_num_threads(threads)
    try:
        warm_up(device)
        failed = None
    except Exception as e:  # noqa: BLE001 - each run will then fail, and record why
        failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    # spawn, imports and warm-up: the parent's clock started before the spawn
    results.put(("ready", slot, time.time() - started, failed))
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


class AutoPacking:
    """`--runs-per-device auto`: the rule (`estimate.auto_packing`) applied at the start and
    again after every completed run, over the runs still to train and the sweep's completed
    records. When it asks for more runs per device than are running, workers are added; a
    running worker is never stopped. On GPUs the first answer is 1 until the sweep's own runs
    have measured the rate the utilisation comes from; on CPUs it is the core count at once."""

    def __init__(self, names: list[str], todo: list[PlannedRun], records: list[RunRecord]):
        self.names, self.kind = names, slots.kind(names)
        self.left = {p.run_id: p for p in todo}
        self.records = [r for r in records if r.status == "completed"]
        self.device_bytes = (est.available_memory("cpu")[0] if self.kind == "cpu"
                             else slots.gpu_memory_bytes(0))
        first = self._rule()
        self.k = first.runs_per_device
        say(f"runs per device: {first.why}")

    def _rule(self) -> est.Packing:
        rate = est.measured_rate(self.records, self.kind) if self.kind == "cuda" else None
        return est.auto_packing(self.kind, len(self.names),
                                [(p.cfg, p.accounting) for p in self.left.values()], rate,
                                device_bytes=self.device_bytes)

    def slots(self) -> list[str]:
        return slots.expand(self.names, self.k)

    def done(self, p: PlannedRun, rec: RunRecord | None) -> list[str]:
        """A run ended: the slots of the workers to add (often none)."""
        self.left.pop(p.run_id, None)
        if rec is not None and rec.status == "completed":
            self.records.append(rec)
        if not self.left:
            return []
        packing = self._rule()
        if packing.runs_per_device <= self.k:
            return []
        new = slots.expand(self.names, packing.runs_per_device - self.k)
        self.k = packing.runs_per_device
        say(f"runs per device: {packing.why}")
        return new


def run_pool(out: Path, todo: list[PlannedRun], devices: list[str], progress: bool, *,
             packing: AutoPacking | None = None,
             worker_startup: list[float] | None = None) -> None:
    """One spawned worker per slot, started once, pulling runs from a shared queue.

    `devices` holds one entry per worker (slots.expand); with `packing` (auto) the pool starts
    packing.slots() instead and adds workers when the rule asks. Each worker's start-up
    (spawn, imports, device warm-up) is said once and appended to `worker_startup`."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after CUDA init is unsafe; spawn also keeps workers clean
    tasks, results = ctx.Queue(), ctx.Queue()
    for i, p in enumerate(todo):
        tasks.put((i, payload(p)))
    first = packing.slots() if packing is not None else devices
    n_cpu_slots = sum(s == "cpu" for s in first) or 1
    # CPU workers share the cores; OMP_NUM_THREADS, when set, is the user's choice per process
    threads = max(1, int(os.environ.get("OMP_NUM_THREADS") or 0)
                  or (os.cpu_count() or 1) // n_cpu_slots)
    level = logging.getLogger("llmscale").getEffectiveLevel()
    workers: list = []

    def start(new: list[str]) -> None:
        for s in new:
            # Not daemonic: a daemonic process may not start children, and a trainer may need to.
            w = ctx.Process(target=_pool_worker,
                            args=(s, threads, tasks, results, str(out), level, time.time()))
            tasks.put(None)  # after every run: each worker takes one when the runs are gone
            w.start()
            workers.append(w)

    start(first)
    bar = SweepProgress(todo, progress)
    errors: list[tuple[str, str]] = []
    try:
        errors = _collect(todo, workers, results, bar, packing, start, worker_startup)
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


def _collect(todo: list[PlannedRun], workers: list, results, bar: SweepProgress,
             packing: AutoPacking | None, start, worker_startup: list[float] | None
             ) -> list[tuple[str, str]]:
    """Wait for one answer per run (noting workers' start-ups as they come); stop early when
    every worker has exited."""
    errors: list[tuple[str, str]] = []
    preempted = False
    answered = 0
    while answered < len(todo):
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
        if item[0] == "ready":
            _, slot, seconds, failed = item
            if worker_startup is not None:
                worker_startup.append(seconds)
            say(f"worker on {slot} ready in {seconds:.1f} s (spawn, imports, device warm-up)"
                + (f"; its warm-up failed: {failed}" if failed else ""))
            continue
        answered += 1
        index, rec_dict, how = item
        rec = RunRecord(**rec_dict) if rec_dict is not None else None
        preempted = preempted or (rec is not None and rec.status == "preempted")
        if isinstance(how, tuple):  # (kind, message): the worker caught an exception
            errors.append((how[0], f"{todo[index].run_dir.name}: {how[1]}"))
            bar.done(todo[index], rec, f" (error: {how[1]})")
        else:
            bar.done(todo[index], rec, NOTES[how])
        if packing is not None and not preempted:
            start(packing.done(todo[index], rec))
    return errors
