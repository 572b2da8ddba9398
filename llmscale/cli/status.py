"""`llmscale status SWEEP_DIR`: done, running, failed and todo runs of a sweep."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from llmscale.sweep import PlannedRun


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="done, running, failed and todo runs of a sweep")
    p.add_argument("sweep_dir")


def format_status(sweep_dir: Path) -> str:
    from llmscale.sweep import count_states, dropped_records, load_sweep_config, sweep_state

    cfg = load_sweep_config(sweep_dir)
    planned = sweep_state(cfg, sweep_dir, reconcile=False)
    counts = count_states(planned)
    lines = [f"sweep {cfg.name!r} in {sweep_dir}: {len(planned)} runs: "
             + ", ".join(f"{v} {k}" for k, v in counts.items())]
    tokens_done = sum(p.accounting.tokens for p in planned if p.state == "done")
    tokens_all = sum(p.accounting.tokens for p in planned)
    lines.append(f"tokens: {tokens_done:,} of {tokens_all:,} trained in completed runs")
    lines += time_lines(planned)
    for p in planned:
        if p.state == "failed":
            assert p.record is not None
            reason = p.record.error or "(no reason recorded)"
            lines.append(f"  {p.record.status}: {p.run_dir.name}: {reason}")
        elif p.state in ("running", "partial", "preempted"):
            lines.append(f"  {p.state}: {p.run_dir.name}")
    from llmscale.sweep.executors import slurm_status_lines

    lines += slurm_status_lines(sweep_dir, planned)
    dropped = dropped_records(sweep_dir, planned)
    if dropped:
        lines.append(f"{len(dropped)} run(s) no longer in the sweep's plan (kept in results.csv, "
                     f"left out of fits):")
        lines += [f"  {r.status}: {Path(r.run_dir).name if r.run_dir else r.run_id}"
                  for r in dropped]
    return "\n".join(lines)


def _when(iso: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(iso) if iso else None
    except ValueError:
        return None


def time_lines(planned: list[PlannedRun], now: datetime | None = None) -> list[str]:
    """Elapsed time since the first run started, the rates measured by device, and an ETA for
    the unfinished runs at the measured rate (as many at once as are running now)."""
    from llmscale.sweep import estimate as est

    records = [p.record for p in planned if p.record is not None]
    starts = [t for t in (_when(r.started_at) for r in records) if t is not None]
    if not starts:
        return ["elapsed: nothing has started yet"]
    left = [p for p in planned if p.state not in ("done", "failed")]
    ends = [t for t in (_when(r.finished_at) for r in records) if t is not None]
    end = (now or datetime.now(timezone.utc)) if left or not ends else max(ends)
    lines = [f"elapsed: {est.fmt_time((end - min(starts)).total_seconds())} since the first run "
             f"started ({min(starts).isoformat(timespec='seconds')})"]
    rates = {d: r for d in ("cuda", "cpu") if (r := est.measured_rate(records, d)) is not None}
    lines += [f"rate: {r.how}" for r in rates.values()]
    if not left:
        return lines
    if not rates:
        return lines + [f"ETA: unknown until a run completes ({len(left)} run(s) left)"]
    done = [est.device_class(r) for r in records if r.status == "completed"]
    device = max(rates, key=done.count)  # the device most of the sweep ran on
    at_once = max(1, sum(p.state == "running" for p in planned))
    secs = [rates[device].run_seconds(p.cfg, p.accounting) for p in left]
    return lines + [f"ETA: about {est.fmt_time(est.makespan(secs, at_once))} for {len(left)} "
                    f"run(s) left at the measured {device} rate, {at_once} at a time"]


def run(args: argparse.Namespace) -> int:
    print(format_status(Path(args.sweep_dir)))
    return 0
