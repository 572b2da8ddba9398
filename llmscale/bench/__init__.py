"""`llmscale bench WHAT`: benchmarks that print figures (ratios against a baseline measured in
the same run), never pass/fail. One module per subject."""

from __future__ import annotations

import importlib


def bench_cli(what: str, quick: bool = False) -> int:
    module = importlib.import_module(f"llmscale.bench.{what}")
    module.main(quick=quick)
    return 0
