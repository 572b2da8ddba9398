"""`llmscale validate CONFIG`: check the whole config and print what it would run.

Every point of the sweep is expanded and validated, files and globs must exist, trackers must
be installed; then the resolved base config, its counts, and the plan's summary (runs, FLOPs,
estimated time on the chosen devices, GPU-hours, disk) are printed, with a warning for runs
that would not fit in memory. Nothing is trained or written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmscale.cli.common import add_config_args, check_inputs, load
from llmscale.cli.sweep import add_where_args, plan_estimate


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a config and its whole sweep; print the plan")
    add_config_args(p)
    add_where_args(p)


def run(args: argparse.Namespace) -> int:
    from llmscale.accounting import run_accounting
    from llmscale.config import dump_yaml, with_overrides
    from llmscale.layout import SWEEP_FILE
    from llmscale.sweep import plan_points, planned_run, say, sweep_state

    cfg = load(args)
    if args.executor:
        cfg = with_overrides(cfg, {"sweep.executor": args.executor})
    points = plan_points(cfg)  # validates every expanded point
    check_inputs(cfg, [p.cfg for p in points])
    acc = run_accounting(cfg)
    sys.stdout.write(dump_yaml(cfg))
    print(f"# run_id: {cfg.run_id}")
    print(f"# vocab_size: {cfg.vocab_size}  params_total: {acc.params_total:,}  "
          f"params_nonembedding: {acc.params_nonembedding:,}")
    print(f"# flops_per_token: {acc.flops_per_token:,}  tokens: {acc.tokens:,}  "
          f"flops: {acc.flops:.3e}")
    out = Path(cfg.output.dir)
    # an existing sweep directory: the estimate counts what is done there (nothing is written)
    planned = (sweep_state(cfg, out, points, reconcile=False) if (out / SWEEP_FILE).is_file()
               else [planned_run(out, p) for p in points])
    text, warnings = plan_estimate(planned, cfg, args.devices, args.runs_per_device, table=False)
    print("# sweep: " + "\n# ".join(text.splitlines()))
    for w in warnings:
        say(w)
    return 0
