"""report.py: report.md and a self-contained report.html, on synthetic and real sweeps."""

from __future__ import annotations

import base64
import re

from test_plots_data import drop_columns, make_fit, make_records, shapes, write_sweep

from llmscale.plots import make_plots
from llmscale.records import read_results
from llmscale.report import build_all, fmt, report_cli, write_report


def _assert_self_contained(page: str) -> None:
    assert 'src="http' not in page and "href=\"http" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    # every src/href is inline data (no relative files, no protocol-relative URLs)
    for attr in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page, flags=re.I):
        assert attr.startswith("data:"), attr
    assert "url(" not in page  # no CSS-loaded resources either


def test_full_report_from_synthetic_sweep(tmp_path):
    recs = make_records(shapes(hidden=(16, 32, 64)), incomplete=2)
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs))
    make_plots(sweep, formats=("png",))  # the report embeds PNGs; SVGs are test_plots' job
    md, page = write_report(sweep)
    text, html = md.read_text(), page.read_text()
    _assert_self_contained(html)
    # the figures are embedded, and decode to PNGs
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == 6
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in imgs)
    for section in ("Sweep summary", "Scaling laws", "founding linear model",
                    "Compute-optimal allocation", "Cost laws", "Irreducible loss", "Results",
                    "Skipped runs"):
        assert section in text and section in html, section
    # numbers come from the records and fit.json, formatted
    assert "24 (completed: 22, failed: 2)" in text
    assert "E = 1.6 [1.52, 1.68]" in text  # chinchilla E with its CI
    assert "| E of the chinchilla law | 1.6 | [1.52, 1.68] | above the floor" in text
    assert "killed by the test" not in text  # skipped reasons come from fit.json ...
    assert "not completed" in text
    held = [r for r in recs if r.status == "completed"][-1]
    assert "(held out)" in text
    assert held.run_id in text
    # markdown references the PNGs it sits beside
    assert "](plots/loss_vs_params.png)" in text
    # the linear model is compared with the best power law by held-out error
    assert "held-out error 1.00%" in text


def test_one_shape_sweep_says_why_laws_are_missing(tmp_path):
    recs = make_records([(32, 1)], tokens=(100_000,), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs, laws=(), n_heldout=0, budgets=()))
    make_plots(sweep, formats=("png",))  # the report embeds PNGs; SVGs are test_plots' job
    md, page = write_report(sweep)
    text = md.read_text()
    assert "Not fitted:" in text
    assert "1 distinct N" in text and "linear:" in text
    assert "Figure isoflop not drawn" in text
    _assert_self_contained(page.read_text())


def test_fitter_reason_is_preferred(tmp_path):
    recs = make_records(shapes(hidden=(16, 32)), budgets=())
    fit = make_fit(recs, laws=("power",), budgets=())
    fit["not_fitted"] = {"chinchilla": "every run has the same D"}
    fit["laws"]["saturating"] = {"inputs": ["N"], "error": "did not converge"}  # no params
    sweep = write_sweep(tmp_path / "s", recs, fit)
    make_plots(sweep, formats=("png",))
    md, _ = write_report(sweep)
    text = md.read_text()
    assert "chinchilla: every run has the same D" in text
    assert "saturating: did not converge" in text


def test_old_schema_and_partial_sweep(tmp_path):
    recs = make_records(shapes(hidden=(16, 32)), incomplete=3, budgets=())
    sweep = write_sweep(tmp_path / "s", recs, None)
    drop_columns(sweep / "results.csv", ["gpu_hours", "checkpoint_bytes", "val_bpb", "error",
                                        "data_entropy_bpb", "run_dir"])
    assert read_results(sweep / "results.csv")[1] == []
    fit = make_fit(recs, laws=("linear", "power"), budgets=())
    fit.pop("floor")
    import json

    (sweep / "fit.json").write_text(json.dumps(fit))
    make_plots(sweep, formats=("png",))  # the report embeds PNGs; SVGs are test_plots' job
    md, page = write_report(sweep)
    text = md.read_text()
    assert "failed: 3" in text and "Irreducible loss" not in text
    assert "Figure learning_curves not drawn" in text
    _assert_self_contained(page.read_text())


def test_report_cli_when_nothing_can_be_fitted(tmp_path, capsys):
    """No fit.json, one shape: report fits first, the fitter refuses, the report says why."""
    recs = make_records([(32, 1)], tokens=(100_000,), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, None)
    assert report_cli(sweep) == 0
    assert "no fit" in capsys.readouterr().err
    assert (sweep / "report.html").is_file() and (sweep / "plots" / "plots.json").is_file()
    text = (sweep / "report.md").read_text()
    assert "No fit: no fit" not in text and "all runs of one size" in text
    _assert_self_contained((sweep / "report.html").read_text())


def test_cli_exit_codes(tmp_path, capsys):
    from llmscale.cli import main

    recs = make_records(shapes(hidden=(16,)), budgets=())
    sweep = write_sweep(tmp_path / "s", recs, make_fit(recs, laws=("linear", "power"), budgets=()))
    make_plots(sweep, formats=("png",))
    assert main(["report", str(sweep)]) == 0
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing does not exist" in err and "Traceback" not in err


def test_fmt():
    assert fmt(None) == "–" and fmt(12) == "12" and fmt(1_234_567) == "1.23e+06"
    assert fmt(0.000123) == "1.23e-04" and fmt(3.14159) == "3.14" and fmt(True) == "True"


def test_real_small_sweep(tmp_path):
    """A real sweep of tiny models (bytes tokenizer, synthetic text), then build_all."""
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
    build_all(out, bootstrap=8)
    man = (out / "plots" / "plots.json").read_text()
    for name in ("loss_vs_params", "loss_vs_compute", "learning_curves", "cost"):
        assert (out / "plots" / f"{name}.png").is_file(), (name, man)
    text = (out / "report.md").read_text()
    assert "6 (completed: 6)" in text
    assert all(r.run_id in text for r in records)
    assert (out / "fit.json").is_file() and "No fit" not in text
    _assert_self_contained((out / "report.html").read_text())
