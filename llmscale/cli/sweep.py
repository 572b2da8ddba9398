"""`llmscale sweep CONFIG`: train every run of the sweep, then fit, plot and report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from llmscale import layout
from llmscale.cli.analyse import analyse_sweep
from llmscale.cli.common import add_config_args, check_inputs, load
from llmscale.config import RunConfig
from llmscale.errors import UserError
from llmscale.fit.robust import serial_blas
from llmscale.sweep import PlannedRun, count_states, say, shape


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="train every run of the config's sweep, then fit and plot")
    add_config_args(p)
    p.add_argument("--out", default=None, help="sweep directory (default: output.dir)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    add_where_args(p)
    p.add_argument("--partition", default=None, help="SLURM partition (sweep.slurm.partition)")
    p.add_argument("--time-min", type=int, default=None, help="SLURM time limit, minutes")
    p.add_argument("--gpus-per-run", type=int, default=None, help="GPUs per run (DDP when > 1)")
    p.add_argument("--mem-gb", type=int, default=None, help="SLURM memory per task, GB")
    p.add_argument("--no-wait", action="store_true",
                   help="executor slurm: submit and return at once (exit 3 while tasks are "
                        "queued); `llmscale status DIR` follows them")
    p.add_argument("--retry-failed", action="store_true",
                   help="run failed, diverged and oom runs again")
    p.add_argument("--force", action="store_true",
                   help="use an output directory that holds a different sweep's results")
    p.add_argument("--no-analysis", action="store_true",
                   help="skip the fit, plots and report after the sweep")


def add_where_args(p: argparse.ArgumentParser) -> None:
    """Where the runs execute: shared by `sweep` and `validate` (whose estimate depends on it)."""
    p.add_argument("--devices", default=None,
                   help="cpu, auto (one worker per GPU) or cuda:0,cuda:1,... (default: one run "
                        "at a time on cuda:0 when CUDA is available, else on the CPU)")
    p.add_argument("--runs-per-device", type=_runs_per_device, default=1,
                   help="runs that share one device at a time (default 1), or auto: as many as "
                        "the device's memory, its measured utilisation and the CPU cores allow "
                        "(README: Running on GPUs)")
    p.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="where runs execute (default: sweep.executor)")


def _runs_per_device(value: str) -> int | str:
    from llmscale.sweep.slots import parse_runs_per_device

    try:
        return parse_runs_per_device(value)
    except UserError:
        raise argparse.ArgumentTypeError(f"{value!r}: allowed: an integer >= 1 or auto") from None


def plan_estimate(planned: list[PlannedRun], cfg: RunConfig, devices: str | None = None,
                  runs_per_device: int | str = 1, table: bool = True) -> tuple[str, list[str]]:
    """The plan table (when `table`) and its summary: runs, FLOPs, time on the chosen slots,
    GPU-hours, checkpoint disk, with footnotes saying how the time is estimated. Also the
    memory warnings, one line each."""
    from llmscale.sweep import estimate as est

    todo = [p for p in planned if p.state != "done"]
    if cfg.sweep.executor == "slurm":
        slots = est.slurm_slots(cfg, len(todo))
    else:
        slots = est.local_slots(devices, runs_per_device,
                                [(p.cfg, p.accounting) for p in todo],
                                [p.record for p in planned if p.record is not None])
    records = [p.record for p in planned if p.record is not None]
    rate = est.rate_for(records, slots.device)
    secs = {p.run_id: rate.run_seconds(p.cfg, p.accounting, slots) for p in planned}
    lines = []
    if table:
        lines += _table(planned, secs)
    counts = count_states(planned)
    total_flops = sum(p.accounting.flops for p in planned)
    todo_flops = sum(p.accounting.flops for p in todo)
    left = est.makespan([secs[p.run_id] for p in todo], slots.n)
    disk = sum(est.checkpoint_disk_bytes(p.accounting, p.cfg.output.keep_checkpoints)
               for p in planned)
    keep = "/".join(str(k) for k in sorted({p.cfg.output.keep_checkpoints for p in planned}))
    analysis = est.analysis_seconds(len(planned))
    head = (f"{len(planned)} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); "
            f"{total_flops:.3g} FLOPs in all, {todo_flops:.3g} left; ")
    lines.append(head + (f"about {est.fmt_time(left)} left on {slots.n} slot(s), then about "
                         f"{est.fmt_time(analysis)} for the fit, plots and report: "
                         f"{est.fmt_time(left + analysis)} in all" if todo else
                         "nothing left to train"))
    gpu_h = sum(secs[p.run_id] for p in todo) * slots.gpus_per_run / 3600
    lines.append(f"GPU-hours left: {gpu_h:.3g}" if slots.device == "cuda" else
                 "GPU-hours left: 0 (CPU)")
    lines.append(f"checkpoints: about {est.fmt_bytes(disk)} on disk (the last {keep or 0} of "
                 f"each run kept, output.keep_checkpoints; {est.BYTES_PER_PARAM_CHECKPOINT} "
                 f"B/param each: fp32 weights + AdamW state)")
    lines.append(f"(time: {rate.how}; {slots.how})")
    return "\n".join(lines), _memory_warnings(planned, cfg, slots.device)


def _table(planned: list[PlannedRun], secs: dict[str, float]) -> list[str]:
    from llmscale.sweep.estimate import fmt_time

    header = ("run_dir", "shape", "lr", "seed", "params_nonemb", "tokens", "FLOPs", "est_time",
              "status")
    rows = []
    for p in planned:
        a = p.accounting
        rows.append((p.run_dir.name, shape(p.cfg), f"{p.cfg.train.lr:g}", str(p.cfg.train.seed),
                     f"{a.params_nonembedding:,}", f"{a.tokens:,}", f"{a.flops:.3g}",
                     fmt_time(secs[p.run_id]), p.state))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return lines


def _memory_warnings(planned: list[PlannedRun], cfg: RunConfig, device: str) -> list[str]:
    """One warning naming the largest run that will not fit, and how many do not."""
    from llmscale.sweep import estimate as est

    avail, where = est.available_memory(device, cfg, slurm=cfg.sweep.executor == "slurm")
    if avail is None:
        return []
    need = {p.run_id: est.memory_estimate(p.cfg, p.accounting) for p in planned}
    over = [p for p in planned if need[p.run_id].total > avail]
    if not over:
        return []
    big = max(over, key=lambda p: need[p.run_id].total)
    m = need[big.run_id]
    return [f"warning: {len(over)} run(s) may not fit in memory; the largest, {big.run_dir.name}, "
            f"needs about {est.fmt_bytes(m.total)} (weights, gradients and AdamW state "
            f"{est.fmt_bytes(m.state_bytes)}, activations {est.fmt_bytes(m.activation_bytes)}) "
            f"> {est.fmt_bytes(avail)} ({where}); it would end as oom"]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, key in (("partition", "sweep.slurm.partition"), ("time_min", "sweep.slurm.time_min"),
                      ("gpus_per_run", "sweep.slurm.gpus_per_run"), ("mem_gb", "sweep.slurm.mem_gb"),
                      ("executor", "sweep.executor")):
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from llmscale.config import check_device_name, with_overrides
    from llmscale.sweep import plan_points, planned_run, run_sweep, sweep_state

    cfg = load(args)
    overrides = _overrides(args)
    if overrides:
        cfg = with_overrides(cfg, overrides)
    if cfg.sweep.executor == "local" and args.gpus_per_run not in (None, 1):
        raise UserError(f"--gpus-per-run {args.gpus_per_run}: a run spanning GPUs needs "
                        f"--executor slurm (or `torchrun ... llmscale train` for one run); the "
                        f"local executor runs one device per run")
    out = Path(args.out or cfg.output.dir)
    # a real run plans again in run_sweep, which reports duplicate points; say it once
    points = plan_points(cfg, log=say if args.dry_run else (lambda _msg: None))
    check_inputs(cfg, [p.cfg for p in points])
    for d in (args.devices or "").split(","):
        if d.strip():
            check_device_name(d.strip(), "--devices")
    if args.dry_run:
        planned = (sweep_state(cfg, out, points, reconcile=False) if out.is_dir()
                   else [planned_run(out, p) for p in points])
        text, warnings = plan_estimate(planned, cfg, args.devices, args.runs_per_device)
        print(text)
        for w in warnings:
            say(w)
        return 0
    results_before = _mtime(layout.results_path(out))
    if cfg.sweep.executor == "slurm":
        code = _slurm(cfg, out, args)
        if code != 0 or args.no_analysis:
            return code
        _analyse(out, changed=_mtime(layout.results_path(out)) != results_before)
        return 0
    if args.no_wait:
        raise UserError("--no-wait: only with --executor slurm (a local sweep runs here)")
    records = run_sweep(cfg, out, devices=args.devices, runs_per_device=args.runs_per_device,
                        executor=cfg.sweep.executor, retry_failed=args.retry_failed,
                        force=args.force, progress=True)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    say(f"results: {layout.results_path(out)} "
        f"({', '.join(f'{v} {k}' for k, v in counts.items())})")
    if not args.no_analysis:
        _analyse(out, changed=_mtime(layout.results_path(out)) != results_before)
    return 0


def _slurm(cfg, out: Path, args: argparse.Namespace) -> int:
    """The SLURM path: exit 0 when every run has ended, 3 while tasks are queued or running,
    4 when runs stopped before finishing (README: exit codes)."""
    from llmscale.sweep.executors import slurm_sweep

    if args.devices is not None or args.runs_per_device != 1:
        raise UserError("--devices and --runs-per-device are for --executor local; on SLURM "
                        "use sweep.slurm.gpus_per_run and tasks_per_run")
    return slurm_sweep(cfg, out, wait=not args.no_wait, retry_failed=args.retry_failed,
                       force=args.force, progress=True)


def _mtime(p: Path) -> int | None:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return None


def _analyse(out: Path, changed: bool) -> None:
    """Fit, plots and report; skipped when nothing changed since the last analysis.

    "Last analysis" is the newest of fit.json and report.md (a sweep too small for any law
    writes a report but no fit.json), compared with results.csv. A failing analysis is a
    warning: the sweep's results stand, and `llmscale report` can be run later.
    """
    stamps = [t for t in (_mtime(layout.fit_path(out)), _mtime(out / layout.REPORT_MD))
              if t is not None]
    results = _mtime(layout.results_path(out))
    if not changed and stamps and results is not None and max(stamps) >= results:
        return
    t0 = time.perf_counter()
    try:
        with serial_blas():
            analyse_sweep(out)
    except Exception as e:  # noqa: BLE001 - the sweep's results stand even if a fit cannot be made
        say(f"warning: analysis failed ({type(e).__name__}: {e}); {layout.RESULTS_FILE} is "
            f"complete, run `llmscale report {out}` later")
        return
    say(f"analysis: fit, plots and report in {time.perf_counter() - t0:.1f} s")
