"""`llmscale status SWEEP_DIR`: done, running, failed and todo runs of a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="done, running, failed and todo runs of a sweep")
    p.add_argument("sweep_dir")


def run(args: argparse.Namespace) -> int:
    from llmscale.sweep import status_cli

    return status_cli(Path(args.sweep_dir))
