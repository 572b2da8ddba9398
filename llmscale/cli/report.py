"""`llmscale report SWEEP_DIR`: write SWEEP_DIR/report.md and report.html."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write SWEEP_DIR/report.md and report.html")
    p.add_argument("sweep_dir")


def run(args: argparse.Namespace) -> int:
    from llmscale.report import report_cli

    return report_cli(Path(args.sweep_dir))
