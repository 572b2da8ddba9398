"""`llmscale status SWEEP_DIR`: done, running, failed and todo runs of a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def run(args: argparse.Namespace) -> int:
    print(format_status(Path(args.sweep_dir)))
    return 0
