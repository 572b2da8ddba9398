"""`llmscale report SWEEP_DIR`: write SWEEP_DIR/report.md and report.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write SWEEP_DIR/report.md and report.html")
    p.add_argument("sweep_dir")
    p.add_argument("--all-runs", action="store_true",
                   help="include runs that are no longer in the sweep's plan (sweep.yaml)")


def run(args: argparse.Namespace) -> int:
    from llmscale.analysis import load_sweep
    from llmscale.report import write_report

    sweep_dir = Path(args.sweep_dir)
    data = load_sweep(sweep_dir, all_runs=args.all_runs)
    if data.fit_note:
        print(f"llmscale: {data.fit_note}", file=sys.stderr)
    md, page = write_report(sweep_dir, data)
    print(f"wrote {md} and {page}")
    return 0
