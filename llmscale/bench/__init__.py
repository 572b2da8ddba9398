"""`llmscale bench WHAT`: benchmarks that print figures (ratios against a baseline measured in
the same run), never pass/fail. One module per subject."""

from __future__ import annotations

import importlib


def run_bench(what: str, quick: bool = False) -> None:
    """Run `llmscale.bench.<what>.main(quick=...)`, which prints its figures."""
    module = importlib.import_module(f"llmscale.bench.{what}")
    module.main(quick=quick)
