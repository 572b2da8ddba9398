"""`llmscale sweep CONFIG`: train every run of the sweep, then fit, plot and report."""

from __future__ import annotations

import argparse

from llmscale.cli.common import add_config_args, load


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="train every run of the config's sweep, then fit and plot")
    add_config_args(p)
    p.add_argument("--out", default=None, help="sweep directory (default: output.dir)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--devices", default=None,
                   help="cpu, auto (one worker per GPU) or cuda:0,cuda:1,... (default: cpu, or "
                        "cuda:0 when CUDA is available)")
    p.add_argument("--runs-per-device", type=int, default=1,
                   help="runs that share one device at a time (default 1)")
    p.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="where runs execute (default: sweep.executor)")
    p.add_argument("--partition", default=None, help="SLURM partition (sweep.slurm.partition)")
    p.add_argument("--time-min", type=int, default=None, help="SLURM time limit, minutes")
    p.add_argument("--gpus-per-run", type=int, default=None, help="GPUs per run (DDP when > 1)")
    p.add_argument("--mem-gb", type=int, default=None, help="SLURM memory per task, GB")
    p.add_argument("--retry-failed", action="store_true",
                   help="run failed, diverged and oom runs again")
    p.add_argument("--force", action="store_true",
                   help="use an output directory that holds a different sweep's results")
    p.add_argument("--no-analysis", action="store_true",
                   help="skip the fit, plots and report after the sweep")


def run(args: argparse.Namespace) -> int:
    from llmscale.sweep import sweep_cli

    return sweep_cli(load(args), args)
