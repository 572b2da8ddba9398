"""`llmscale plan PRIOR`: design the sweep that pins a law, before spending the compute.

Candidate designs are sized to the budget, simulated from the prior law and fitted with the
real fitter (llmscale.design); the table shows each one's expected 95% interval widths, and
the best one is written as a ready-to-run sweep YAML with --out. Not `sweep/plan`, which
expands a config into runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from llmscale.errors import UserError

HEADER = "Written by `llmscale plan`"  # first line of a YAML it wrote (and may overwrite)


def add_parser(sub) -> None:
    from llmscale.design import SIM_BOOTSTRAP, SIMS, TARGETS_HELP

    p = sub.add_parser("plan", help="design the sweep that pins a law: simulate candidate "
                                    "designs from a prior and write the best as a sweep YAML")
    p.add_argument("prior", help="a pilot sweep's fit.json, a sweep directory, or a named prior "
                                 "shipped with llmscale (e.g. chinchilla)")
    p.add_argument("--budget-flops", type=float, default=None,
                   help="training FLOPs for the whole study")
    p.add_argument("--budget-gpu-hours", type=float, default=None,
                   help="GPU-hours for the whole study, at the rate the dry run uses (on CPU: "
                        "hours of the whole machine)")
    p.add_argument("--target", required=True, help=f"what to pin: {TARGETS_HELP}")
    p.add_argument("--out", default=None, help="write the best design's sweep YAML here")
    p.add_argument("--name", default=None,
                   help="the sweep's name in that YAML (default: --out's file name)")
    p.add_argument("--config", default=None,
                   help="base run config to size runs with (default: the pilot's sweep.yaml, "
                        "or the named prior's)")
    p.add_argument("--compare", action="append", default=[], metavar="CONFIG",
                   help="also simulate this sweep config's own design, as it is (repeatable)")
    p.add_argument("--sims", type=int, default=SIMS,
                   help=f"simulated sweeps per design (default {SIMS})")
    p.add_argument("--bootstrap", type=int, default=SIM_BOOTSTRAP,
                   help=f"bootstrap resamples per simulated fit (default {SIM_BOOTSTRAP})")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes (default: the CPU count)")
    p.add_argument("--seed", type=int, default=0, help="seeds the simulated sweeps")
    p.add_argument("--devices", default=None,
                   help="for the time estimate, as `llmscale sweep --devices`")
    p.add_argument("--runs-per-device", type=int, default=1,
                   help="for the time estimate, as `llmscale sweep --runs-per-device`")


def _check(args: argparse.Namespace) -> None:
    budgets = [v for v in (args.budget_flops, args.budget_gpu_hours) if v is not None]
    if len(budgets) != 1:
        raise UserError("give one budget: --budget-flops C or --budget-gpu-hours H "
                        f"({'both were given' if budgets else 'neither was given'})")
    for name, v in (("--budget-flops", args.budget_flops),
                    ("--budget-gpu-hours", args.budget_gpu_hours)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise UserError(f"{name} must be a positive number, got {v}")
    for name, v, least in (("--sims", args.sims, 2), ("--bootstrap", args.bootstrap, 2),
                           ("--jobs", args.jobs, 1), ("--runs-per-device", args.runs_per_device,
                                                      1)):
        if v is not None and v < least:
            raise UserError(f"{name} must be at least {least}, got {v}")


def run(args: argparse.Namespace) -> int:
    from llmscale import design
    from llmscale.config import load_config

    _check(args)
    target = design.parse_target(args.target)
    if args.out is not None:
        _check_out(Path(args.out))
    prior = design.load_prior(args.prior, args.config)
    budget = design.Budget(flops=args.budget_flops, gpu_hours=args.budget_gpu_hours)
    cost = design.cost_model(prior.records, args.devices, args.runs_per_device)
    compare = [design.design_from_config(load_config(c), f"{c} (as given)")
               for c in args.compare]
    jobs = args.jobs or os.cpu_count() or 1
    p = design.plan(prior, target, budget, cost=cost, compare=compare, sims=args.sims,
                    bootstrap=args.bootstrap, jobs=jobs, seed=args.seed,
                    progress=_progress())
    print(design.describe(p, cost))
    for label in p.skipped:
        print(f"llmscale: note: {label}: does not fit {budget.show()}", file=sys.stderr)
    if args.out is not None:
        out = Path(args.out)
        name = args.name or out.stem
        text = design.write_sweep(p, out, name=name, command=_command(args), header=HEADER)
        print(f"wrote {out} ({len(text.splitlines())} lines): `llmscale validate {out}` "
              f"prints its plan, `llmscale sweep {out}` runs it")
    return 0


def _check_out(out: Path) -> None:
    """Never write over a file that `llmscale plan` did not write (a hand-made config)."""
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as plan.yaml")
    if out.exists():
        try:
            first = out.read_text(encoding="utf-8").split("\n", 1)[0]
        except (OSError, UnicodeDecodeError):
            first = ""
        if HEADER not in first:
            raise UserError(f"--out {out} exists and was not written by `llmscale plan`; "
                            "choose another file or remove it")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this plan (for the YAML's header)."""
    from llmscale.design import SIM_BOOTSTRAP, SIMS

    budget = (f"--budget-flops {args.budget_flops:g}" if args.budget_flops is not None
              else f"--budget-gpu-hours {args.budget_gpu_hours:g}")
    extra = "".join(f" --compare {c}" for c in args.compare)
    extra += f" --config {args.config}" if args.config else ""
    # everything that changes the table (not --jobs: the results do not depend on it)
    extra += "" if args.sims == SIMS else f" --sims {args.sims}"
    extra += "" if args.bootstrap == SIM_BOOTSTRAP else f" --bootstrap {args.bootstrap}"
    extra += "" if args.seed == 0 else f" --seed {args.seed}"
    extra += f" --devices {args.devices}" if args.devices else ""
    extra += "" if args.runs_per_device == 1 else f" --runs-per-device {args.runs_per_device}"
    return (f"llmscale plan {args.prior} {budget} --target {args.target}{extra}"
            f"{f' --out {args.out}' if args.out else ''}")


def _progress():
    """A progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: list = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc="simulated sweeps", leave=False))
        bar[0].update(done - bar[0].n)
        if done == total:
            bar[0].close()

    return update
