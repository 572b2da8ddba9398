"""plots.py: every figure from a sweep fitted by the real fitter, and the degraded cases."""

from __future__ import annotations

import os
import stat

import pytest
from test_plots_data import (
    drop_columns,
    make_records,
    shapes,
    write_metrics,
    write_position_loss,
    write_sweep,
)

from llmscale.analysis import load_sweep
from llmscale.cli import main
from llmscale.errors import UserError
from llmscale.plots import FIGURES, make_plots

ALL = [name for name, _ in FIGURES]
ONE_KIND = [n for n in ALL if n not in ("position_loss", "kinds")]


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
    sweep = write_sweep(tmp_path / "s", recs)
    man = make_plots(sweep)
    drawn = [n for n in ALL if man[n]["files"]]
    assert drawn == ONE_KIND, {n: man[n].get("missing") for n in ALL}
    paths = [sweep / "plots" / f for n in drawn for f in man[n]["files"]]
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in drawn for e in ("png", "svg"))
    _assert_images(paths)
    assert "No GPU-hours panel" in man["cost"]["caption"]  # a CPU sweep: 0 GPU-hours
    assert "position_loss.csv" in man["position_loss"]["missing"]
    assert "one model kind" in man["kinds"]["missing"]
    # atomic writes: no temp files left, and the mode a plain open() gives
    assert not [p for p in (sweep / "plots").iterdir() if p.name.startswith(".")]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o666 & ~umask


def test_isoflop_figure_uses_the_fitters_budgets(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64, 128)))
    sweep = write_sweep(tmp_path / "s", recs)
    data = load_sweep(sweep, refit=False)
    iso = data.fit.compute_optimal.isoflop
    assert iso is not None and len(iso.budgets) == 2
    # each budget holds its 8 planned runs (4 widths x 2 depths), and any other run within 5%
    assert all(len(b.run_ids) >= 8 for b in iso.budgets)
    assert make_plots(sweep, data, formats=("png",))["isoflop"]["files"] == ["isoflop.png"]


def test_kinds_and_position_loss(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)), budgets=())
    other = make_records(shapes(hidden=(16, 32, 64)), budgets=(), kind="gru", seed=1,
                         law={"E": 1.7, "A": 40.0, "B": 300.0, "alpha": 0.3, "beta": 0.4})
    sweep = write_sweep(tmp_path / "s", recs + other)
    for r in recs + other:
        write_position_loss(sweep, r)
    data = load_sweep(sweep, refit=False)
    assert set(data.fit.groups) == {"gru", "lstm"}
    man = make_plots(sweep, data, formats=("png",))
    assert man["kinds"]["files"] and man["position_loss"]["files"]


def test_gpu_sweep_draws_the_gpu_hours_panel(tmp_path):
    recs = make_records(shapes(hidden=(16, 32)), gpus=2, budgets=())
    sweep = write_sweep(tmp_path / "s", recs)
    assert "No GPU-hours panel" not in make_plots(sweep, formats=("png",))["cost"]["caption"]


def test_partial_sweep_with_unfinished_runs(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)), incomplete=5)
    sweep = write_sweep(tmp_path / "s", recs)
    man = make_plots(sweep, formats=("png",))
    assert all(man[n]["files"] for n in ONE_KIND)


def test_one_shape_sweep_without_a_fit(tmp_path):
    """One shape: the real fitter refuses every law; figures that need no fit are drawn."""
    recs = make_records([(32, 1)], tokens=(100_000,), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, fit=False)
    data = load_sweep(sweep, bootstrap=4)
    assert data.fit is None and "no law can be fitted" in data.fit_note
    man = make_plots(sweep, data, formats=("png",))
    assert man["loss_vs_params"]["files"]  # the one point, no law
    assert man["learning_curves"]["files"]
    assert man["isoflop"]["files"] == [] and "IsoFLOP" in man["isoflop"]["missing"]
    assert man["residuals"]["files"] == [] and man["residuals"]["missing"]
    assert not (sweep / "plots" / "residuals.png").exists()


def test_old_schema_csv_and_missing_run_dirs(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)))
    sweep = write_sweep(tmp_path / "s", recs, fit=False, metrics=False)
    drop_columns(sweep / "results.csv", ["gpu_hours", "checkpoint_bytes", "run_dir", "mfu",
                                        "data_entropy_bpb", "error", "tokens_per_s",
                                        "model_kind", "flops_budget", "sweep_point",
                                        "flops_per_token"])
    data = load_sweep(sweep, bootstrap=4)  # fits the old table
    assert data.fit is not None and data.fit.floor is None and not data.fit.groups
    man = make_plots(sweep, data, formats=("png",))
    assert man["loss_vs_params"]["files"] and man["cost"]["files"]  # wall time still there
    assert "metrics.csv" in man["learning_curves"]["missing"]


def test_stale_fit_is_redone(tmp_path):
    """results.csv newer than fit.json: loading the sweep refits first."""
    # 3 token counts: chinchilla needs 3 distinct D (llmscale.fit.pipeline.NEEDS_DISTINCT)
    recs = make_records(shapes(hidden=(16, 32)), tokens=(200_000, 400_000, 800_000), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, bootstrap=0)
    assert load_sweep(sweep).fit_note == ""  # fresh: no refit
    first = (sweep / "fit.json").stat().st_mtime_ns
    t = first + 10**9
    os.utime(sweep / "results.csv", ns=(t, t))
    data = load_sweep(sweep, bootstrap=4)
    assert data.fit_note == "" and (sweep / "fit.json").stat().st_mtime_ns > first
    assert data.fit.laws["chinchilla"].resamples == 4  # the new fit, read back


def test_user_mistakes_are_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        load_sweep(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "results.csv" in capsys.readouterr().err
    (tmp_path / "empty" / "results.csv").write_text("run_id,status\n")
    with pytest.raises(UserError, match="no readable runs"):
        load_sweep(tmp_path / "empty")


def test_plot_cli_lists_figures(tmp_path, capsys):
    recs = make_records(shapes(hidden=(16, 32)), budgets=())
    sweep = write_sweep(tmp_path / "s", recs)
    write_metrics(sweep, recs[0])
    assert main(["plot", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "isoflop: not drawn" in out and "loss_vs_params: loss_vs_params.png" in out


def test_a_fit_json_from_an_older_llmscale_is_refitted(tmp_path):
    recs = make_records(shapes(hidden=(16, 32)), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, bootstrap=0)
    (sweep / "fit.json").write_text('{"laws": {}, "points": []}')  # schema 1, untyped
    t = (sweep / "results.csv").stat().st_mtime_ns + 10**9
    os.utime(sweep / "fit.json", ns=(t, t))  # fresh by its date
    data = load_sweep(sweep, bootstrap=0)
    assert data.fit is not None and data.fit.laws


def test_position_loss_is_binned_on_log_spaced_positions():
    import numpy as np

    from llmscale.plots import _log_bins

    pos = np.arange(1, 513, dtype=float)
    x, y = _log_bins(pos, pos)
    assert y.tolist() == [1, 2, 3.5, 6.5, 12.5, 24.5, 48.5, 96.5, 192.5, 384.5]  # 1,2,3-4,..,257-512
    assert np.all(np.diff(x) > 0)


def test_an_overflowed_bootstrap_sample_does_not_break_the_figures(tmp_path):
    """An unconstrained law's resample can overflow a coefficient; fit.json stores it as null
    and every reader skips it."""
    import json

    recs = make_records(shapes(hidden=(16, 32, 64)))
    sweep = write_sweep(tmp_path / "s", recs)
    raw = json.loads((sweep / "fit.json").read_text())
    for law in raw["laws"].values():
        if law["samples"] and "A" in law["samples"][0]:
            law["samples"][0]["A"] = None
    (sweep / "fit.json").write_text(json.dumps(raw))
    t = (sweep / "results.csv").stat().st_mtime_ns + 10**9
    os.utime(sweep / "fit.json", ns=(t, t))
    data = load_sweep(sweep)
    ch = data.fit.laws["chinchilla"]
    assert len(ch.finite_samples) == len(ch.samples) - 1
    man = make_plots(sweep, data, formats=("png",))
    assert man["loss_vs_params"]["files"] and man["loss_vs_compute"]["files"]
    assert main(["predict", str(sweep / "fit.json"), "--params", "3e4", "--tokens", "1e6"]) == 0
