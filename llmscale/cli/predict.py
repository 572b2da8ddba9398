"""`llmscale predict FIT_JSON`: predict loss and cost from a fit, or plan a budget.

Every answer states its law, its interval and how far it extrapolates; each reason not to trust
it is a `warning:` line on stderr, and `--strict` turns any warning into exit 2.
"""

from __future__ import annotations

import argparse
import math
import sys

from llmscale.errors import UserError
from llmscale.fit.guard import EXTRAPOLATION_LIMIT, Prediction


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict loss and cost from a fit.json")
    p.add_argument("fit_json", help="a fit.json, or a sweep directory holding one")
    p.add_argument("--law", default=None, help="law to use (default: best by held-out error)")
    p.add_argument("--params", type=float, default=None, help="N, parameters")
    p.add_argument("--tokens", type=float, default=None, help="D, training tokens")
    p.add_argument("--budget-flops", type=float, default=None, help="C, FLOPs")
    p.add_argument("--budget-gpu-hours", type=float, default=None, help="GPU-hours")
    p.add_argument("--max-extrapolation", type=float, default=EXTRAPOLATION_LIMIT,
                   help="warn beyond this multiple of the largest fitted N, D or C "
                        f"(default {EXTRAPOLATION_LIMIT:g})")
    p.add_argument("--strict", action="store_true", help="exit 2 when any warning is printed")


def run(args: argparse.Namespace) -> int:
    from llmscale.analysis import read_fit
    from llmscale.fit.guard import plan_budget, predict_loss

    budgets = [v for v in (args.budget_flops, args.budget_gpu_hours) if v is not None]
    for name, v in (("--params", args.params), ("--tokens", args.tokens),
                    ("--budget-flops", args.budget_flops),
                    ("--budget-gpu-hours", args.budget_gpu_hours),
                    ("--max-extrapolation", args.max_extrapolation)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise UserError(f"{name} must be a positive number, got {v}")
    if (args.params is None) == (not budgets) or len(budgets) > 1:
        raise UserError("give either --params N [--tokens D], or one of --budget-flops C / "
                        "--budget-gpu-hours H")
    fit = read_fit(args.fit_json)
    try:
        if args.params is not None:
            r = predict_loss(fit, args.params, args.tokens, law=args.law,
                             limit=args.max_extrapolation)
        else:
            r = plan_budget(fit, flops=args.budget_flops, gpu_hours=args.budget_gpu_hours,
                            limit=args.max_extrapolation)
    except ValueError as e:
        raise UserError(str(e)) from e
    print(format_prediction(r, budget=args.params is None))
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if r.warnings and args.strict:
        raise UserError(f"{len(r.warnings)} warning(s) and --strict: the prediction is not "
                        "reliable")
    return 0


def _ci(iv) -> str:
    return f" (95% interval {iv[0]:.4g} – {iv[1]:.4g})" if iv else ""


def format_prediction(r: Prediction, budget: bool) -> str:
    q = r.inputs
    lines = []
    if budget:
        lines.append(f"budget C = {q['C']:.4g} FLOPs: N_opt = {q['N']:.4g}{_ci(r.N_opt_interval)}, "
                     f"D_opt = {q['D']:.4g} tokens{_ci(r.D_opt_interval)}")
    lines.append(f"{r.law}: predicted loss {r.loss:.4f}{_ci(r.interval)}")
    lines.append("extrapolation: " + ", ".join(f"{k} {v:.3g}x the largest fitted"
                                               for k, v in r.extrapolation.items()))
    if r.wall_time_s is not None:
        lines.append(f"predicted wall time {r.wall_time_s:.4g} s")
    if r.checkpoint_bytes is not None:
        lines.append(f"predicted checkpoint size {r.checkpoint_bytes:.4g} bytes")
    lines.append(f"verdict: {'reliable' if r.reliable else 'not reliable (see warnings)'}")
    return "\n".join(lines)
