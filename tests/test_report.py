"""report.py: report.md and a self-contained report.html, from the real fitter's output on
synthetic records and on a real sweep."""

from __future__ import annotations

import base64
import re

from test_plots_data import drop_columns, make_records, shapes, write_sweep

from llmscale.analysis import load_sweep, read_fit
from llmscale.cli import main
from llmscale.cli.analyse import analyse_sweep
from llmscale.fit.result import FitResult
from llmscale.plots import make_plots
from llmscale.records import read_results
from llmscale.report import fmt, write_report


def _assert_self_contained(page: str) -> None:
    assert 'src="http' not in page and "href=\"http" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for attr in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page, flags=re.I):
        assert attr.startswith("data:"), attr
    assert "url(" not in page  # no CSS-loaded resources either


def test_full_report_from_the_fitters_output(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)), incomplete=2)
    sweep = write_sweep(tmp_path / "s", recs)
    fit = read_fit(sweep)
    make_plots(sweep, formats=("png",))  # the report embeds PNGs; SVGs are test_plots' job
    md, page = write_report(sweep)
    text, html = md.read_text(), page.read_text()
    _assert_self_contained(html)
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == 6  # every figure a one-kind sweep without position_loss.csv supports
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in imgs)
    for section in ("Sweep summary", "Scaling laws", "founding linear model",
                    "Compute-optimal allocation", "Cost laws", "Irreducible loss", "Results",
                    "Skipped runs"):
        assert section in text and section in html, section
    assert "24 (completed: 22, failed: 2)" in text
    # numbers come from fit.json, formatted
    ch = fit.laws["chinchilla"]
    lo, hi = ch.intervals["E"]
    assert f"E = {fmt(ch.params['E'])} [{fmt(lo)}, {fmt(hi)}]" in text
    assert f"| E of the chinchilla law | {fmt(ch.params['E'], 4)} |" in text
    # the one held-out set is named, and marked in the results table
    assert ", ".join(fit.heldout_run_ids) in text
    assert text.count("(held out)") == len(fit.heldout_run_ids)
    assert "killed by the test" in text  # skipped runs with the record's reason
    assert "](plots/loss_vs_params.png)" in text
    assert f"held-out error {100 * fit.laws['linear'].heldout.mean_abs_rel_err:.2f}%" in text
    assert "The budget planner" in text and "1000×" in text


def test_guardrails_mark_the_report_not_reliable(tmp_path):
    """A law whose held-out error is large and whose planner runs below the floor is marked
    'not reliable', with the reasons listed."""
    recs = make_records(shapes(hidden=(16, 32, 64)))
    for r in recs:  # a floor above the law's E (1.6): far predictions fall below it
        r.data_entropy_bpb = 2.6 / 0.6931471805599453
    sweep = write_sweep(tmp_path / "s", recs)
    md, _ = write_report(sweep)
    text = md.read_text()
    assert "not reliable" in text and "below the floor 2.6" in text


def test_one_shape_sweep_says_why_there_is_no_fit(tmp_path, capsys):
    recs = make_records([(32, 1)], tokens=(100_000,), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, fit=False)
    assert main(["report", str(sweep)]) == 0
    assert "no fit" in capsys.readouterr().err
    text = (sweep / "report.md").read_text()
    assert "all runs of one size" in text and "Figure isoflop not drawn" in text
    _assert_self_contained((sweep / "report.html").read_text())


def test_fitter_reason_for_a_law_it_did_not_fit(tmp_path):
    recs = make_records(shapes(hidden=(16, 32)), tokens=(200_000,), budgets=())
    sweep = write_sweep(tmp_path / "s", recs)
    fit = read_fit(sweep)
    assert "chinchilla" in fit.not_fitted  # one token count: no D dependence to fit
    text = write_report(sweep)[0].read_text()
    assert f"chinchilla: {fit.not_fitted['chinchilla']}" in text


def test_old_schema_and_partial_sweep(tmp_path):
    recs = make_records(shapes(hidden=(16, 32)), incomplete=3, budgets=())
    sweep = write_sweep(tmp_path / "s", recs, fit=False)
    drop_columns(sweep / "results.csv", ["gpu_hours", "checkpoint_bytes", "val_bpb", "error",
                                        "data_entropy_bpb", "run_dir", "model_kind",
                                        "flops_per_token", "flops_budget", "sweep_point"])
    assert read_results(sweep / "results.csv")[1] == []
    data = load_sweep(sweep, bootstrap=4)
    md, page = write_report(sweep, data)
    text = md.read_text()
    assert "failed: 3" in text and "Irreducible loss" not in text
    assert "Figure learning_curves not drawn" in text
    _assert_self_contained(page.read_text())


def test_cli_exit_codes(tmp_path, capsys):
    recs = make_records(shapes(hidden=(16, 32)), budgets=())
    sweep = write_sweep(tmp_path / "s", recs)
    assert main(["report", str(sweep)]) == 0
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing does not exist" in err and "Traceback" not in err


def test_fmt():
    assert fmt(None) == "–" and fmt(12) == "12" and fmt(1_234_567) == "1.23e+06"
    assert fmt(0.000123) == "1.23e-04" and fmt(3.14159) == "3.14" and fmt(True) == "True"


def test_real_small_sweep_round_trips_its_fit(tmp_path):
    """A real sweep of tiny models (bytes tokenizer, synthetic text), then the post-sweep
    analysis; its fit.json round-trips through the typed result."""
    from llmscale.config import from_dict
    from llmscale.sweep import run_sweep

    cfg = from_dict({
        "name": "tinyreal",
        "data": {"source": "synthetic", "synthetic_tokens": 4000, "synthetic_val_tokens": 400,
                 "synthetic_vocab": 64},
        "tokenizer": {"kind": "bytes", "vocab_size": None},
        "model": {"embedding_dim": 8, "hidden_dim": 8, "num_layers": 1},
        "train": {"tokens": 1024, "batch_size": 4, "seq_len": 16, "lr": 1.0e-2},
        "eval": {"tokens": 64, "every_tokens": 256},  # few evaluations: the test's time is training
        "output": {"log_every_steps": 2},
        "sweep": {"grid": {"model.hidden_dim": [8, 12, 16], "train.tokens": [384, 768]}},
    })
    out = tmp_path / "sweep"
    records = run_sweep(cfg, out, progress=False)
    assert len(records) == 6
    analyse_sweep(out, bootstrap=8)
    text = (out / "fit.json").read_text()
    fit = FitResult.from_json(text)
    assert fit.to_json() == text and read_fit(out) == fit
    assert {p.run_id for p in fit.points} == {r.run_id for r in records}
    assert fit.floor is not None and all(p.flops_per_token for p in fit.points)
    for name in ("loss_vs_params", "loss_vs_compute", "learning_curves", "cost"):
        assert (out / "plots" / f"{name}.png").is_file(), name
    report = (out / "report.md").read_text()
    assert "6 (completed: 6)" in report and "No fit" not in report
    assert all(r.run_id in report for r in records)
    _assert_self_contained((out / "report.html").read_text())


def test_model_kinds_side_by_side(tmp_path):
    """Two kinds in one sweep: the report sets each kind's laws side by side, with where the
    curves cross and its interval, from fit.json's groups."""
    tokens = (200_000, 400_000, 800_000)  # chinchilla needs 3 distinct D
    recs = make_records(shapes(hidden=(16, 32, 64)), tokens=tokens, budgets=())
    gru = make_records(shapes(hidden=(16, 32, 64)), tokens=tokens, budgets=(), kind="gru", seed=1,
                       law={"E": 1.7, "A": 40.0, "B": 300.0, "alpha": 0.3, "beta": 0.4})
    sweep = write_sweep(tmp_path / "s", recs + gru)
    fit = read_fit(sweep)
    text = write_report(sweep)[0].read_text()
    assert "## Model kinds side by side" in text and "| law | gru | lstm |" in text
    alpha = fit.groups["gru"].laws["chinchilla"].params["alpha"]
    assert f"alpha = {fmt(alpha)}" in text
    assert "curves cross at [95%]" in text and len(fit.crossings) >= 1
    assert "lstm vs gru" in text or "gru vs lstm" in text
