"""Arguments shared by several commands, and turning them into a config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def add_sweep_dir_args(p: argparse.ArgumentParser) -> None:
    """SWEEP_DIR and --all-runs, for the commands that draw or report a sweep."""
    p.add_argument("sweep_dir")
    p.add_argument("--all-runs", action="store_true",
                   help="include runs that are no longer in the sweep's plan (sweep.yaml)")


def load_sweep_data(args: argparse.Namespace):
    """The sweep's records and fit (refitted when stale), with the fitter's note on stderr."""
    from llmscale.analysis import load_sweep

    data = load_sweep(Path(args.sweep_dir), all_runs=args.all_runs)
    if data.fit_note:
        print(f"llmscale: {data.fit_note}", file=sys.stderr)
    return data
