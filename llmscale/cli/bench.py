"""`llmscale bench WHAT`: print throughput figures (benchmarks, never pass/fail)."""

from __future__ import annotations

import argparse

BENCHES = ["data", "train", "sweep", "fit"]


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="print throughput figures (data, train, sweep, fit)")
    p.add_argument("what", choices=BENCHES)
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")


def run(args: argparse.Namespace) -> int:
    from llmscale.bench import run_bench

    run_bench(args.what, quick=args.quick)
    return 0
