"""The post-sweep analysis that `llmscale sweep` runs: fit (fit.json), figures, report."""

from __future__ import annotations

from pathlib import Path


def analyse_sweep(sweep_dir: Path, *, bootstrap: int | None = None) -> None:
    """Fit, draw and report a sweep directory (results.csv has just changed: always refit).

    A sweep too small for any law still gets its figures and a report that says why; other
    errors propagate, and the caller decides."""
    from llmscale.analysis import load_sweep, refit_sweep
    from llmscale.plots import make_plots
    from llmscale.report import write_report

    sweep_dir = Path(sweep_dir)
    note = refit_sweep(sweep_dir, bootstrap=bootstrap)
    data = load_sweep(sweep_dir, refit=False)
    if note:
        from dataclasses import replace

        data = replace(data, fit_note=note + ("; showing the older fit" if data.fit else ""))
    make_plots(sweep_dir, data)
    write_report(sweep_dir, data)
