"""`llmscale predict FIT_JSON`: predict loss and cost from a fit, or plan a budget."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict loss and cost from a fit.json")
    p.add_argument("fit_json")
    p.add_argument("--law", default=None, help="law to use (default: best by held-out error)")
    p.add_argument("--params", type=float, default=None, help="N, parameters")
    p.add_argument("--tokens", type=float, default=None, help="D, training tokens")
    p.add_argument("--budget-flops", type=float, default=None, help="C, FLOPs")
    p.add_argument("--budget-gpu-hours", type=float, default=None, help="GPU-hours")


def run(args: argparse.Namespace) -> int:
    from llmscale.analysis import predict_cli

    return predict_cli(args)
