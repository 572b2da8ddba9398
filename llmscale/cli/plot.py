"""`llmscale plot SWEEP_DIR`: draw a sweep's figures under SWEEP_DIR/plots."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a sweep's figures under SWEEP_DIR/plots")
    p.add_argument("sweep_dir")


def run(args: argparse.Namespace) -> int:
    from llmscale.plots import plot_cli

    return plot_cli(Path(args.sweep_dir))
