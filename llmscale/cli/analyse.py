"""The post-sweep analysis that `llmscale sweep` runs: fit (fit.json), figures, report."""

from __future__ import annotations

from pathlib import Path


def analyse_sweep(sweep_dir: Path, *, bootstrap: int | None = None) -> None:
    """Fit, draw and report a sweep directory. Errors propagate: the caller decides."""
    from llmscale.report import build_all

    build_all(Path(sweep_dir), bootstrap=bootstrap)
