"""`llmscale validate CONFIG`: print the resolved config, or what is wrong with it."""

from __future__ import annotations

import argparse
import sys

from llmscale.cli.common import add_config_args, load


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="print the resolved config, or what is wrong with it")
    add_config_args(p)


def run(args: argparse.Namespace) -> int:
    from llmscale.accounting import run_accounting
    from llmscale.config import dump_yaml

    cfg = load(args)
    acc = run_accounting(cfg)
    sys.stdout.write(dump_yaml(cfg))
    print(f"# run_id: {cfg.run_id}")
    print(f"# vocab_size: {cfg.vocab_size}  params_total: {acc.params_total:,}  "
          f"params_nonembedding: {acc.params_nonembedding:,}")
    print(f"# flops_per_token: {acc.flops_per_token:,}  tokens: {acc.tokens:,}  "
          f"flops: {acc.flops:.3e}")
    return 0
