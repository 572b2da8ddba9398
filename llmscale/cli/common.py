"""Arguments shared by several commands, and turning them into a config."""

from __future__ import annotations

import argparse

from llmscale.config import RunConfig


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file (defaults are used when omitted)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=1e-3 (repeatable)")


def load(args: argparse.Namespace) -> RunConfig:
    from llmscale.config import load_config

    return load_config(args.config, args.overrides)
