"""`llmscale sample RUN_DIR`: generate text with a run's model, from the run directory alone."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text with a run's model")
    p.add_argument("run_dir", help="a run directory (llmscale train --out, or a sweep's runs/<name>)")
    p.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature; 0 = greedy (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default cpu)")


def run(args: argparse.Namespace) -> int:
    from llmscale.evaluate import generate, load_run_model

    rm = load_run_model(args.run_dir, args.device)
    print(generate(rm, args.prompt, tokens=args.tokens, temperature=args.temperature,
                   seed=args.seed))
    return 0
