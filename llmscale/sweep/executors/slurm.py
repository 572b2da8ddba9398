"""The SLURM executor: a job array through submitit, one sweep point per array task, requeued on
preemption.

One array task per run. The process on the login node submits, writes each run's task id to
DIR/slurm/jobs.json (so a rerun while tasks wait in the queue submits nothing twice), then
follows the tasks with squeue until none is pending or running: a requeued task is pending
again, not done. sacct is asked only about tasks squeue has forgotten, and a cluster without
accounting gets one note, not a warning per poll.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from llmscale import layout
from llmscale.atomic import atomic_write_text
from llmscale.config import RunConfig, SlurmConfig, config_hash
from llmscale.errors import UserError
from llmscale.records import RunRecord, upsert_record
from llmscale.sweep.executors.common import SweepProgress, from_payload, payload, train_claimed
from llmscale.sweep.plan import plan_points, say
from llmscale.sweep.state import (
    PlannedRun,
    claim_sweep_dir,
    count_states,
    read_disk_record,
    sweep_state,
    table_record,
)

# squeue states of a task that will still run (or is finishing); anything else has ended.
LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                         "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT",
                         "SUSPENDED", "STOPPED", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
# Exit codes of `llmscale sweep` (documented in the README): 0 = every run ended.
EXIT_QUEUED = 3  # runs still queued or running on SLURM
EXIT_UNFINISHED = 4  # runs stopped before finishing (cancelled, killed); a rerun resumes them

log = logging.getLogger("llmscale.sweep.slurm")


class _TimeLimitWarning:
    """SLURM's warning before the time limit (sbatch --signal=USR2@signal_delay_s) stops the run
    at its next step, exactly as SIGUSR1 does: train_run checkpoints and returns `preempted`,
    then the task requeues itself and resumes from that checkpoint.

    train_run handles SIGUSR1 only inside its training loop; a warning that arrives before the
    loop is passed on once the loop has started, and a stray SIGUSR1 outside it no longer kills
    the process.
    """

    def __init__(self) -> None:
        self.warned = False
        self.finished = False

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self._outside_loop)
        signal.signal(signal.SIGUSR2, self._warning)  # replaces submitit's requeue-and-exit

    def _outside_loop(self, signum, frame) -> None:
        self.warned = True

    def _loop_handler(self):
        h = signal.getsignal(signal.SIGUSR1)
        return h if callable(h) and h != self._outside_loop else None

    def _warning(self, signum, frame) -> None:
        log.info("SLURM time-limit warning (%s): checkpointing to requeue",
                 signal.Signals(signum).name)
        self.warned = True
        handler = self._loop_handler()
        if handler is not None:
            handler(signal.SIGUSR1, frame)
        else:
            threading.Thread(target=self._pass_on_later, daemon=True).start()

    def _pass_on_later(self) -> None:
        while not self.finished:
            if self._loop_handler() is not None:
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.2)


class SweepTask:
    """One sweep point as a submitit job: train, upsert; requeued on preemption or time limit.

    `scontrol requeue` and preemption send SIGTERM: train_run checkpoints, SLURM requeues the
    task, and the next start resumes from the checkpoint. Before the time limit SLURM sends
    USR2 (see _TimeLimitWarning): the run checkpoints and this task requeues itself. submitit's
    own `checkpoint` path (a signal before this call starts) requeues the same call.
    """

    def __call__(self, data: dict[str, Any], out: str) -> dict | None:
        import submitit

        from llmscale.logs import configure_logging

        configure_logging("info")
        p = from_payload(Path(out), data)
        env = submitit.JobEnvironment()
        on_slurm = "SLURM_JOB_ID" in os.environ and env.cluster == "slurm"
        warning = _TimeLimitWarning()
        if on_slurm:
            warning.install()
        gpus = int(data.get("gpus_per_run", 1))
        device = "cpu" if gpus == 0 else "auto"
        try:
            if env.num_tasks > 1:
                # One process per GPU (or tasks_per_run on CPU): train_run does DDP from the env
                # (gloo on CPU, NCCL on GPUs); rank 0 claims the run and records it.
                dist = submitit.helpers.TorchDistributedEnvironment().export()
                if gpus > 0:
                    device = f"cuda:{dist.local_rank}"
                if dist.rank != 0:
                    from llmscale.train import train_run

                    return train_run(p.cfg, p.run_dir, device=device, progress=False).to_dict()
            if (p.run_dir / layout.CHECKPOINT_DIR).is_dir():
                log.info("%s: resuming from its checkpoint", p.run_dir.name)
            rec, how = train_claimed(p, Path(out), device, progress=False)
        finally:
            warning.finished = True
            if on_slurm:
                # Done: nothing left to checkpoint. Ignored (not Python handlers, which
                # interpreter shutdown resets), so a late warning cannot fail the finished task.
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
                signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        log.info("%s: %s%s", p.run_dir.name, rec.status if rec is not None else how,
                 f" ({rec.error})" if rec is not None and rec.error else "")
        if on_slurm and warning.warned and rec is not None and rec.status == "preempted":
            log.info("requeueing task %s to resume %s", env.job_id, p.run_dir.name)
            subprocess.run(["scontrol", "requeue", env.job_id], check=True, timeout=60)
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


# -- the cluster: partitions, task states ------------------------------------------------------


def _slurm_cmd(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(args, 1, "", str(e))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


def check_partition(s: SlurmConfig) -> None:
    """A partition that exists, with GPUs when the runs ask for them; else one UserError line
    saying what sinfo reports."""
    r = _slurm_cmd(["sinfo", "-h", "-o", "%P|%G"])
    if r.returncode != 0:
        raise UserError(f"executor slurm: sinfo failed: {_last_line(r.stderr)}")
    gres: dict[str, set[str]] = {}
    default = None
    for line in r.stdout.splitlines():
        name, _, g = line.strip().partition("|")
        if name.endswith("*"):
            name = default = name[:-1]
        gres.setdefault(name, set()).add(g or "(null)")
    listing = ", ".join(f"{n} (GRES {','.join(sorted(g))}{', default' if n == default else ''})"
                        for n, g in gres.items()) or "no partitions"
    name = s.partition or default
    if name is None:
        raise UserError(f"sweep.slurm.partition is not set and the cluster has no default "
                        f"partition; sinfo reports: {listing}")
    if name not in gres:
        raise UserError(f"sweep.slurm.partition {name!r}: no such partition; sinfo reports: "
                        f"{listing}")
    if s.gpus_per_run > 0 and not any("gpu" in g for g in gres[name]):
        with_gpus = [n for n, g in gres.items() if any("gpu" in x for x in g)]
        raise UserError(
            f"sweep.slurm.partition {name!r} has no GPUs (sinfo reports GRES "
            f"{','.join(sorted(gres[name]))}) but sweep.slurm.gpus_per_run is {s.gpus_per_run}; "
            f"set gpus_per_run: 0 for CPU-only tasks"
            + (f", or use a partition with GPUs: {', '.join(with_gpus)}" if with_gpus else ""))


_SACCT_NOTED = False


def task_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{task id: (state, reason)} for array tasks such as "123_4": squeue first (it knows pending
    and running tasks, and ended ones for MinJobAge), then sacct for the rest when accounting
    exists. A task neither knows is ("UNKNOWN", ...): it ended long ago."""
    global _SACCT_NOTED
    if not job_ids:
        return {}
    out: dict[str, tuple[str, str]] = {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    r = _slurm_cmd(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(arrays)])
    if r.returncode != 0 and len(arrays) > 1:  # one purged id fails the whole query: ask singly
        lines = []
        for a in arrays:
            ra = _slurm_cmd(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", "-j", a])
            lines += ra.stdout.splitlines() if ra.returncode == 0 else []
    else:
        lines = r.stdout.splitlines() if r.returncode == 0 else []
    for line in lines:
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], "" if parts[2] in ("None", "(null)") else parts[2])
    missing = [j for j in job_ids if j not in out]
    if missing:
        r = _slurm_cmd(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)])
        if r.returncode == 0:
            for line in r.stdout.splitlines():
                jid, _, state = line.strip().partition("|")
                if jid in missing:
                    out[jid] = (state.split()[0] if state else "UNKNOWN", "")
        elif not _SACCT_NOTED:
            _SACCT_NOTED = True
            say(f"note: SLURM accounting is not available (sacct: {_last_line(r.stderr)}); "
                f"tasks squeue no longer lists count as ended")
    for j in job_ids:
        out.setdefault(j, ("UNKNOWN", "not in squeue or sacct"))
    return {j: out[j] for j in job_ids}


# -- DIR/slurm/jobs.json: which task runs which run --------------------------------------------


_JOBS_LOCKS: dict[str, FileLock] = {}


def _jobs_lock(out: Path) -> FileLock:
    """One lock instance per file, so a holder may take it again (FileLock counts)."""
    path = layout.slurm_jobs_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(layout.lock_path(path.resolve()))
    if key not in _JOBS_LOCKS:
        _JOBS_LOCKS[key] = FileLock(key)
    return _JOBS_LOCKS[key]


def read_jobs(out: Path) -> dict[str, list[dict[str, Any]]]:
    """{run_id: [submission, ...]}, oldest first; a submission is {job_id, run_dir,
    submitted_at, state, reason, updated_at}."""
    path = layout.slurm_jobs_path(out)
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", {})
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: unreadable ({e}); move it aside to submit the sweep afresh "
                        f"(tasks it lists may still be queued: check squeue)") from None
    return runs if isinstance(runs, dict) else {}


def _write_jobs(out: Path, runs: dict[str, list[dict[str, Any]]]) -> None:
    atomic_write_text(layout.slurm_jobs_path(out),
                      json.dumps({"runs": runs}, indent=1, sort_keys=True) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _update_states(out: Path, states: dict[str, tuple[str, str]]) -> None:
    with _jobs_lock(out):
        runs = read_jobs(out)
        changed = False
        for subs in runs.values():
            for sub in subs:
                new = states.get(sub["job_id"])
                if new is not None and (sub.get("state"), sub.get("reason")) != new:
                    sub["state"], sub["reason"], sub["updated_at"] = new[0], new[1], _now()
                    changed = True
        if changed:
            _write_jobs(out, runs)


def live_tasks(out: Path, run_ids: set[str] | None = None, *,
               record: bool = True) -> dict[str, tuple[str, str, str]]:
    """{run_id: (job_id, state, reason)} for runs whose latest task is still pending or running
    (asked of squeue now; with `record`, jobs.json is updated with what it says)."""
    latest = {rid: subs[-1] for rid, subs in read_jobs(out).items()
              if subs and (run_ids is None or rid in run_ids)}
    candidates = {rid: sub["job_id"] for rid, sub in latest.items()
                  if sub.get("state", "PENDING") in LIVE_STATES}
    states = task_states(list(candidates.values()))
    if states and record:
        _update_states(out, states)
    return {rid: (jid, *states[jid]) for rid, jid in candidates.items()
            if states[jid][0] in LIVE_STATES}


# -- submitting and waiting ----------------------------------------------------------------------


def _executor_params(cfg: RunConfig, cluster: str) -> dict[str, Any]:
    s = cfg.sweep.slurm
    params: dict[str, Any] = dict(
        name=f"llmscale-{cfg.name}", timeout_min=s.time_min, nodes=1, tasks_per_node=s.tasks,
        cpus_per_task=s.cpus_per_task, mem_gb=s.mem_gb, slurm_signal_delay_s=s.signal_delay)
    if s.gpus_per_run and cluster != "local":  # the local executor would pin CUDA_VISIBLE_DEVICES
        params["gpus_per_node"] = s.gpus_per_run
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[f"slurm_{key}"] = getattr(s, key)
    if s.max_parallel:
        params["slurm_array_parallelism"] = s.max_parallel
    if s.setup:
        params["slurm_setup"] = list(s.setup)
    # requeue: preempted or signalled tasks go back to the queue (some sites default to no)
    params["slurm_additional_parameters"] = {"requeue": True,
                                             **{k.lstrip("-"): v for k, v in s.additional.items()}}
    return params


def _submit(cfg: RunConfig, out: Path, todo: list[PlannedRun], cluster: str) -> list:
    submitit = _import_submitit()
    ex = submitit.AutoExecutor(folder=str(out / layout.SLURM_DIR / "%j"), cluster=cluster)
    ex.update_parameters(**_executor_params(cfg, cluster))
    data = [{**payload(p), "gpus_per_run": cfg.sweep.slurm.gpus_per_run} for p in todo]
    try:
        # submitit prints sbatch's complaint itself; it is said once, below, with what was asked
        with contextlib.redirect_stderr(io.StringIO()):
            jobs = ex.map_array(SweepTask(), data, [str(out)] * len(todo))
    except submitit.core.utils.FailedJobError as e:
        s = cfg.sweep.slurm
        raise UserError(f"sbatch refused the array (partition {s.partition or 'default'}, "
                        f"gpus_per_run {s.gpus_per_run}, sweep.slurm settings): "
                        f"{_last_line(str(e))}") from None
    say(f"submitted {len(jobs)} array task(s) as job {jobs[0].job_id.split('_')[0]} ({cluster}); "
        f"logs in {out / layout.SLURM_DIR}")
    return jobs


def _record_jobs(out: Path, todo: list[PlannedRun], job_ids: list[str]) -> None:
    with _jobs_lock(out):
        runs = read_jobs(out)
        for p, jid in zip(todo, job_ids, strict=True):
            runs.setdefault(p.run_id, []).append(
                {"job_id": jid, "run_dir": p.run_dir.name, "submitted_at": _now(),
                 "state": "PENDING", "reason": "", "updated_at": _now()})
        _write_jobs(out, runs)


def _record_interrupted(out: Path, p: PlannedRun, job_id: str, state: str,
                        submitted_at: str) -> None:
    """A task that ended while its run had not (killed, cancelled, node failure): record the run
    as `preempted` with why, unless train_run recorded its own stop since the submission. The
    run keeps its checkpoint, and a rerun resumes it."""
    rec = read_disk_record(p.run_dir, p.run_id, say)
    if rec is not None and (rec.status != "preempted" or (rec.finished_at or "") >= submitted_at):
        return
    cfg = p.cfg
    rec = RunRecord(
        run_id=p.run_id, sweep=cfg.name, status="preempted", model_kind=cfg.model.kind,
        vocab_size=cfg.vocab_size, embedding_dim=cfg.model.embedding_dim,
        hidden_dim=cfg.model.hidden_dim, num_layers=cfg.model.num_layers,
        dropout=cfg.model.dropout, tie_weights=cfg.model.tie_weights, seq_len=cfg.train.seq_len,
        batch_size=cfg.train.batch_size, lr=cfg.train.lr, seed=cfg.train.seed,
        config_hash=config_hash(cfg), finished_at=_now(),
        error=f"SLURM task {job_id} ended {state} before the run finished (killed, cancelled or "
              f"failed outside training: see {layout.SLURM_DIR}/{job_id}/{job_id}_0_log.err); "
              f"a rerun resumes it from its last checkpoint")
    upsert_record(layout.results_path(out), table_record(rec, p, out))


def _record_ended(out: Path, unfinished: list[PlannedRun]) -> None:
    """Runs whose latest task ended while no `llmscale sweep` was waiting (--no-wait): record
    why they stopped, as the waiting sweep would have."""
    subs = read_jobs(out)
    for p in unfinished:
        last = (subs.get(p.run_id) or [None])[-1]
        if last is not None and last.get("state") not in LIVE_STATES:
            _record_interrupted(out, p, last["job_id"], last.get("state", "UNKNOWN"),
                                last.get("submitted_at", ""))


def _wait(out: Path, runs: dict[str, PlannedRun], progress: bool) -> None:
    """Follow the runs' latest tasks until none is pending or running. Ctrl-C stops waiting
    (the tasks stay queued)."""
    bar = SweepProgress(list(runs.values()), progress)
    seen: dict[str, tuple[str, str]] = {}
    t0 = time.monotonic()
    try:
        while True:
            subs = {rid: s[-1] for rid, s in read_jobs(out).items() if rid in runs and s}
            waiting = {rid: sub for rid, sub in subs.items()
                       if sub.get("state", "PENDING") in LIVE_STATES}
            if not waiting:
                return
            states = task_states([sub["job_id"] for sub in waiting.values()])
            _update_states(out, states)
            for rid, sub in waiting.items():
                jid = sub["job_id"]
                state, reason = states[jid]
                if seen.get(jid) != (state, reason):  # each change of state, once
                    say(f"  {runs[rid].run_dir.name}: task {jid} {state}"
                        + (f" ({reason})" if reason else ""))
                seen[jid] = (state, reason)
                if state in LIVE_STATES:
                    continue
                p = runs[rid]
                _record_interrupted(out, p, jid, state, sub.get("submitted_at", ""))
                rec = read_disk_record(p.run_dir, p.run_id, say)
                bar.done(p, rec, f" (task {jid} {state})")
            # poll often at first (short tasks, tests), gently later (a busy controller)
            time.sleep(min(15.0, 1.0 + (time.monotonic() - t0) / 20))
    except KeyboardInterrupt:
        say("stopped waiting (the tasks stay queued)")
    finally:
        bar.close()


def _wait_local(jobs: list, todo: list[PlannedRun], progress: bool) -> None:
    """submitit's local executor (tests without a cluster): its jobs are local processes."""
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
                    bar.done(todo[i], RunRecord(**res) if res else None)
                except Exception as e:  # noqa: BLE001 - a failed task is reported, others go on
                    bar.done(todo[i], None, f" (job {job.job_id} failed: {_last_line(str(e))[:200]})")
            if pending:
                time.sleep(0.5)
    finally:
        bar.close()


def _require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise UserError("executor slurm: sbatch is not on PATH (not a SLURM login node); "
                        "use --executor local here")


def run_slurm(cfg: RunConfig, out: Path, todo: list[PlannedRun], cluster: str | None,
              progress: bool, wait: bool = True) -> None:
    """Submit the runs of `todo` that have no live task yet; with `wait`, follow every live task
    of these runs until it ends. cluster: None = SLURM, "local" = submitit's local executor."""
    if cluster is None:
        _require_sbatch()
        cluster = "slurm"
    if cluster == "local":
        jobs = _submit(cfg, out, todo, cluster)
        if wait:
            _wait_local(jobs, todo, progress)
        return
    live = live_tasks(out, {p.run_id for p in todo})
    if live:
        say(f"{len(live)} run(s) already have a task in the queue (not submitted again): "
            + ", ".join(f"{jid} {state}" for jid, state, _ in live.values()))
    new = [p for p in todo if p.run_id not in live]
    if new:
        check_partition(cfg.sweep.slurm)
        with _jobs_lock(out):  # two sweep processes must not both submit the same runs
            again = live_tasks(out, {p.run_id for p in new})
            new = [p for p in new if p.run_id not in again]
            if new:
                jobs = _submit(cfg, out, new, cluster)
                _record_jobs(out, new, [j.job_id for j in jobs])
    if wait:
        _wait(out, {p.run_id: p for p in todo}, progress)


def slurm_sweep(cfg: RunConfig, out: Path, *, wait: bool = True, retry_failed: bool = False,
                force: bool = False, progress: bool = True) -> int:
    """`llmscale sweep --executor slurm`: submit what is not finished and not already queued,
    follow the tasks (unless not `wait`), and say what is left. Returns the exit code: 0 when
    every run has ended (completed, or failed/diverged/oom as recorded), EXIT_QUEUED when tasks
    are still queued or running, EXIT_UNFINISHED when runs stopped before finishing."""
    _require_sbatch()
    points = plan_points(cfg)
    claim_sweep_dir(cfg, out, force, points)
    planned = sweep_state(cfg, out, points)
    unfinished = ("todo", "partial", "preempted", "running")
    live = live_tasks(out, {p.run_id for p in planned})
    _record_ended(out, [p for p in planned if p.state in unfinished and p.run_id not in live])
    todo = [p for p in planned if (p.state in unfinished and p.state != "running")
            or (retry_failed and p.state == "failed") or p.run_id in live]
    if len(todo) > len(live):
        check_partition(cfg.sweep.slurm)  # before anything is said or written
    counts = count_states(planned)
    say(f"sweep {cfg.name!r}: {len(planned)} runs: {counts['done']} done, "
        f"{len(todo) - len(live)} to submit, {len(live)} queued or running on SLURM"
        + (f", {counts['failed']} failed (not retried; --retry-failed)"
           if counts["failed"] and not retry_failed else ""))
    if todo:
        run_slurm(cfg, out, todo, None, progress, wait=wait)
    planned = sweep_state(cfg, out, points, probe_claims=False)
    live = live_tasks(out, {p.run_id for p in planned})
    if live:
        say(f"{len(live)} run(s) still queued or running on SLURM:")
        for p in planned:
            if p.run_id in live:
                jid, state, reason = live[p.run_id]
                say(f"  {p.run_dir.name}: task {jid} {state}" + (f" ({reason})" if reason else ""))
        say(f"`llmscale status {out}` shows them; `llmscale sweep` again waits for them "
            f"(nothing is submitted twice)")
        return EXIT_QUEUED
    left = [p for p in planned if p.state in unfinished]
    if left:
        say(f"{len(left)} run(s) stopped before finishing; `llmscale sweep` again resumes them:")
        for p in left:
            why = p.record.error if p.record is not None and p.record.error else p.state
            say(f"  {p.run_dir.name}: {why}")
        return EXIT_UNFINISHED
    return 0


def slurm_status_lines(sweep_dir: Path, planned: list[PlannedRun]) -> list[str]:
    """For `llmscale status`: runs with a task queued or running (with its task id), and runs
    whose task ended before they did. Read-only: status may look at a directory it cannot write."""
    if not layout.slurm_jobs_path(sweep_dir).is_file() or shutil.which("squeue") is None:
        return []
    subs = read_jobs(sweep_dir)
    latest = {p.run_id: subs[p.run_id][-1] for p in planned if subs.get(p.run_id)}
    states = task_states([sub["job_id"] for sub in latest.values()
                          if sub.get("state", "PENDING") in LIVE_STATES])
    lines = []
    for p in planned:
        sub = latest.get(p.run_id)
        if sub is None:
            continue
        jid = sub["job_id"]
        state, reason = states.get(jid, (sub.get("state", "UNKNOWN"), sub.get("reason", "")))
        if state in LIVE_STATES:
            kind = "queued" if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD") else "running"
            lines.append(f"  {kind}: {p.run_dir.name}: task {jid} {state}"
                         + (f" ({reason})" if reason else ""))
        elif p.state not in ("done", "failed"):
            lines.append(f"  stopped: {p.run_dir.name}: task {jid} {state} "
                         f"(`llmscale sweep` resumes it)")
    if not lines:
        return []
    live = sum(" queued: " in ln or " running: " in ln for ln in lines)
    return [f"SLURM: {live} task(s) queued or running (task ids in "
            f"{layout.slurm_jobs_path(sweep_dir)}):"] + lines
