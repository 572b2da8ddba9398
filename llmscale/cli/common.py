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


def check_inputs(cfg: RunConfig, configs: list[RunConfig]) -> None:
    """What a run would find missing only once it starts (data files, tracker packages), for
    every planned config: checked before anything trains, one UserError line each."""
    from llmscale.data.sources import resolve_paths
    from llmscale.tracking import check_trackers

    seen = set()
    for c in configs:
        d = c.data
        if d.source == "files" and (d.paths, d.validation_paths) not in seen:
            seen.add((d.paths, d.validation_paths))
            resolve_paths(d.paths)
            resolve_paths(d.validation_paths, "data.validation_paths")
    check_trackers(cfg.output.report_to)
