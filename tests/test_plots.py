"""plots.py: every figure from a synthetic sweep, and the degraded cases the issue names."""

from __future__ import annotations

import json
import os

import pytest
from test_plots_data import drop_columns, make_fit, make_records, shapes, write_metrics, write_sweep

from llmscale.errors import UserError
from llmscale.plots import FIGURES, load_sweep, make_plots, plot_cli

ALL = [name for name, _ in FIGURES]


def _manifest(sweep):
    return json.loads((sweep / "plots" / "plots.json").read_text())


def _assert_images(paths):
    for p in paths:
        head = p.read_bytes()[:8]
        if p.suffix == ".png":
            assert head == b"\x89PNG\r\n\x1a\n", p
        else:
            assert b"<svg" in p.read_bytes()[:2000], p
        assert p.stat().st_size > 2000, p


def test_every_figure_from_a_full_synthetic_sweep(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)))
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs))
    paths = make_plots(sweep)
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in ALL for e in ("png", "svg"))
    _assert_images(paths)
    man = _manifest(sweep)
    assert all(man[n]["files"] and man[n]["caption"] for n in ALL)
    assert "No GPU-hours panel" in man["cost"]["caption"]  # a CPU sweep: 0 GPU-hours
    # no temp files left behind by the atomic writes
    assert not [p for p in (sweep / "plots").iterdir() if p.name.startswith(".")]


def test_gpu_sweep_draws_the_gpu_hours_panel(tmp_path):
    recs = make_records(shapes(hidden=(16, 32)), gpus=2, budgets=())
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs, budgets=()))
    make_plots(sweep, formats=("png",))
    assert "No GPU-hours panel" not in _manifest(sweep)["cost"]["caption"]


def test_partial_sweep_with_unfinished_runs(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)), incomplete=5)
    recs[0].status = "running"
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs))
    paths = make_plots(sweep, formats=("png",))
    assert len(paths) == len(ALL)


def test_one_shape_sweep_without_fitted_laws(tmp_path):
    """One shape: no N-law can be fitted; figures that need none are still drawn."""
    recs = make_records([(32, 1)], tokens=(100_000,), budgets=())
    fit = make_fit(recs, laws=(), n_heldout=0, budgets=())
    sweep = write_sweep(tmp_path / "s", recs, fit)
    make_plots(sweep, formats=("png",))
    man = _manifest(sweep)
    assert man["loss_vs_params"]["files"]  # the one point, no law
    assert man["learning_curves"]["files"]
    assert man["isoflop"]["files"] == [] and "IsoFLOP" in man["isoflop"]["missing"]
    assert man["residuals"]["files"] == [] and man["residuals"]["missing"]
    assert not (sweep / "plots" / "residuals.png").exists()


def test_old_schema_csv_and_missing_run_dirs(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)))
    sweep = write_sweep(tmp_path / "s", recs, None, metrics=False)
    drop_columns(sweep / "results.csv", ["gpu_hours", "checkpoint_bytes", "run_dir",
                                        "data_entropy_bpb", "mfu", "error", "tokens_per_s"])
    fit = make_fit(recs, isoflop=False)
    fit.pop("cost")
    fit.pop("floor")
    (sweep / "fit.json").write_text(json.dumps(fit))
    make_plots(sweep, formats=("png",))
    man = _manifest(sweep)
    assert man["loss_vs_params"]["files"] and man["cost"]["files"]  # wall time still there
    assert "metrics.csv" in man["learning_curves"]["missing"]


def test_stale_fit_is_redone(tmp_path):
    """results.csv newer than fit.json: plotting asks the real fitter first. With one shape it
    refuses at once (cheap for a test); the older fit is shown, and the note says so."""
    recs = make_records([(32, 1)], tokens=(100_000,), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs, laws=(), n_heldout=0, budgets=()))
    assert load_sweep(sweep).fit_note == ""  # fresh: no refit
    t = os.stat(sweep / "fit.json").st_mtime_ns + 10**9
    os.utime(sweep / "results.csv", ns=(t, t))
    data = load_sweep(sweep, bootstrap=4)
    assert "no law can be fitted" in data.fit_note and "older fit.json" in data.fit_note
    assert data.fit is not None


def test_user_mistakes_are_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        load_sweep(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="results.csv"):
        plot_cli(tmp_path / "empty")
    (tmp_path / "empty" / "results.csv").write_text("run_id,status\n")
    with pytest.raises(UserError, match="no readable runs"):
        load_sweep(tmp_path / "empty")


def test_plot_cli_lists_figures(tmp_path, capsys):
    recs = make_records(shapes(hidden=(16,)), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs, budgets=()))
    write_metrics(sweep, recs[0])
    assert plot_cli(sweep) == 0
    out = capsys.readouterr().out
    assert "isoflop: not drawn" in out and "loss_vs_params: loss_vs_params.png" in out
