"""`llmscale plot SWEEP_DIR`: draw a sweep's figures under SWEEP_DIR/plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmscale.cli.common import add_sweep_dir_args, load_sweep_data


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a sweep's figures under SWEEP_DIR/plots")
    add_sweep_dir_args(p)


def run(args: argparse.Namespace) -> int:
    from llmscale import layout
    from llmscale.plots import make_plots

    sweep_dir = Path(args.sweep_dir)
    manifest = make_plots(sweep_dir, load_sweep_data(args))
    n = 0
    for name, entry in manifest.items():
        n += len(entry["files"])
        print(f"{name}: {', '.join(entry['files'])}" if entry["files"]
              else f"{name}: not drawn: {entry['missing']}")
    print(f"{n} files under {layout.plots_dir(sweep_dir)}")
    return 0
