"""`llmscale plot SWEEP_DIR`: draw a sweep's figures under SWEEP_DIR/plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a sweep's figures under SWEEP_DIR/plots")
    p.add_argument("sweep_dir")
    p.add_argument("--all-runs", action="store_true",
                   help="include runs that are no longer in the sweep's plan (sweep.yaml)")


def run(args: argparse.Namespace) -> int:
    from llmscale import layout
    from llmscale.analysis import load_sweep
    from llmscale.plots import make_plots

    sweep_dir = Path(args.sweep_dir)
    data = load_sweep(sweep_dir, all_runs=args.all_runs)
    if data.fit_note:
        print(f"llmscale: {data.fit_note}", file=sys.stderr)
    manifest = make_plots(sweep_dir, data)
    n = 0
    for name, entry in manifest.items():
        n += len(entry["files"])
        print(f"{name}: {', '.join(entry['files'])}" if entry["files"]
              else f"{name}: not drawn: {entry['missing']}")
    print(f"{n} files under {layout.plots_dir(sweep_dir)}")
    return 0
