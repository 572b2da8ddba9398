"""`llmscale fit SOURCE`: fit scaling laws to a sweep's results and print the table."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit scaling laws to a sweep's results")
    p.add_argument("source", help="sweep directory or results CSV")
    p.add_argument("--law", dest="laws", action="append", default=None,
                   help="law to fit (repeatable): linear, power, saturating, chinchilla, "
                        "compute (default: all that the data supports)")
    p.add_argument("--out", default=None, help="directory for fit.json (default: the sweep dir)")
    p.add_argument("--n", dest="n_column", default="params_nonembedding",
                   help="column for N (default params_nonembedding; or params_total)")
    p.add_argument("--d", dest="d_column", default="tokens", help="column for D (tokens)")
    p.add_argument("--c", dest="c_column", default="flops", help="column for C (FLOPs)")
    p.add_argument("--loss", dest="loss_column", default="val_loss", help="column for the loss")
    p.add_argument("--reduce", choices=["best", "mean"], default="best",
                   help="several runs per shape (learning rates, seeds): keep the best or the mean")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def run(args: argparse.Namespace) -> int:
    from llmscale.analysis import fit_cli

    return fit_cli(args)
