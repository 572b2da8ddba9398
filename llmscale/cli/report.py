"""`llmscale report SWEEP_DIR`: write SWEEP_DIR/report.md and report.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmscale.cli.common import add_sweep_dir_args, load_sweep_data


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write SWEEP_DIR/report.md and report.html")
    add_sweep_dir_args(p)


def run(args: argparse.Namespace) -> int:
    from llmscale.report import write_report

    md, page = write_report(Path(args.sweep_dir), load_sweep_data(args))
    print(f"wrote {md} and {page}")
    return 0
