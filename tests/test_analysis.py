"""llmscale.analysis: results.csv -> fit.json, skipped runs, reduce per shape, bad input, predict."""

import json
import math

import numpy as np
import pytest

from llmscale.analysis import fit_sweep, plan_budget, predict_loss
from llmscale.cli import main
from llmscale.errors import UserError
from llmscale.fit.laws import predict
from llmscale.records import RunRecord, upsert_record

TRUE = {"E": 1.6, "A": 300.0, "alpha": 0.35, "B": 900.0, "beta": 0.3}


def _records(tmp_path, sizes=(1e4, 3e4, 1e5, 3e5, 1e6), tokens=(1e6, 3e6, 1e7, 3e7), seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / "results.csv"
    i = 0
    for h, n in enumerate(sizes):
        for d in tokens:
            loss = float(predict("chinchilla", TRUE, N=n, D=d) * np.exp(rng.normal(0, 0.002)))
            for lr, bump in ((1e-3, 0.0), (3e-3, 0.05)):  # the worse lr must be dropped by "best"
                i += 1
                upsert_record(path, RunRecord(
                    run_id=f"r{i}", status="completed", vocab_size=256, embedding_dim=16,
                    hidden_dim=16 * (h + 1), num_layers=1, tie_weights=False, lr=lr, seed=0,
                    params_nonembedding=int(n), params_total=int(n) + 4096, tokens=int(d),
                    flops=6.0 * n * d, val_loss=loss + bump, gpu_count=0, gpu_hours=0.0,
                    wall_time_s=2e-9 * n * d, tokens_per_s=1e9 / n,
                    checkpoint_bytes=int(4 * n), data_entropy_bpb=1.5, val_bytes_per_token=1.0))
    upsert_record(path, RunRecord(run_id="bad", status="diverged", params_nonembedding=10,
                                  val_loss=float("nan"), error="loss was NaN at step 3"))
    return path


def test_fit_sweep_writes_fit_json(tmp_path):
    _records(tmp_path)
    fit = fit_sweep(tmp_path, bootstrap=4)
    on_disk = json.loads((tmp_path / "fit.json").read_text())
    assert on_disk["laws"].keys() == fit["laws"].keys()
    assert fit["skipped"] == [{"run_id": "bad", "status": "diverged",
                               "reason": "loss was NaN at step 3"}]
    assert len(fit["points"]) == 20  # 40 completed runs, best of 2 lrs per shape
    assert {"linear", "power", "saturating", "chinchilla"} <= set(fit["laws"])
    ch = fit["laws"]["chinchilla"]
    assert abs(ch["params"]["alpha"] - TRUE["alpha"]) < 0.1
    for k, (lo, hi) in ch["ci"].items():
        assert lo <= hi, k
    assert len(ch["bootstrap"]["samples"]) == 4
    h = ch["heldout"]
    assert h["n_fit"] + h["n_heldout"] == 20 and h["n_heldout"] >= 4
    assert 0 <= h["mean_abs_rel_err"] <= h["max_abs_rel_err"] < 0.05
    assert fit["ranking"][0] in fit["laws"]
    assert fit["ranking"].index("chinchilla") < fit["ranking"].index("linear")
    assert fit["floor"]["entropy_nats_per_token"] == pytest.approx(1.5 * math.log(2))
    assert fit["cost"]["wall_time_s"]["params"]["p"] == pytest.approx(1.0, abs=1e-6)
    assert "gpu_hours" not in fit["cost"]  # every run was on CPU
    assert fit["compute_optimal"]["chinchilla"]["a"] > 0
    # compute is the frontier L(C): only runs better than every cheaper run are fitted
    frontier = fit["laws"]["compute"]["residuals"]
    assert 4 <= len(frontier) < len(fit["points"])
    observed = [r["observed"] for r in frontier]
    assert observed == sorted(observed, reverse=True)


def test_reduce_mean_and_params_total(tmp_path):
    _records(tmp_path, sizes=(1e4, 1e5, 1e6), tokens=(1e6, 1e7))
    fit = fit_sweep(tmp_path, laws=["power"], n_column="params_total", reduce="mean",
                    bootstrap=0, out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "fit.json").exists() and fit["reduce"] == "mean"
    assert all(len(p) for p in fit["points"]) and fit["points"][0]["N"] == 1e4 + 4096


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        fit_sweep(tmp_path / "nowhere")
    _records(tmp_path, sizes=(1e4, 1e5), tokens=(1e6,))
    with pytest.raises(UserError, match=r"chinchilla needs at least 6 runs"):
        fit_sweep(tmp_path, laws=["chinchilla"], bootstrap=0)
    one = tmp_path / "one"
    one.mkdir()
    _records(one, sizes=(1e5,), tokens=(1e6, 2e6, 4e6, 8e6))
    with pytest.raises(UserError, match="all runs of one size"):
        fit_sweep(one, laws=["power"], bootstrap=0)
    csv_path = tmp_path / "plain.csv"
    csv_path.write_text("size,loss\n1e5,3.0\n2e5,-1\n4e5,2.5\n")
    with pytest.raises(UserError, match="lacks column.*params_nonembedding.*it has: size, loss"):
        fit_sweep(csv_path)
    with pytest.raises(UserError, match="row3 has loss='-1'"):
        fit_sweep(csv_path, n_column="size", loss_column="loss")
    assert not (tmp_path / "fit.json").exists()  # nothing written on bad input


def test_plain_csv_and_predict_cli(tmp_path, capsys):
    N = np.logspace(4, 7, 8)
    rows = "\n".join(f"{n},{3.0 * n ** -0.05}" for n in N)
    src = tmp_path / "plain.csv"
    src.write_text("size,L\n" + rows + "\n")
    assert main(["fit", str(src), "--n", "size", "--loss", "L", "--law", "power",
                 "--bootstrap", "10"]) == 0
    assert "power" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "fit.json"), "--params", "1e8"]) == 0
    out = capsys.readouterr().out
    assert f"{3.0 * 1e8 ** -0.05:.4f}" in out and "interval" in out
    assert main(["predict", str(tmp_path / "fit.json"), "--budget-flops", "1e18"]) == 2
    assert "no chinchilla law" in capsys.readouterr().err


def test_predict_and_budget(tmp_path):
    _records(tmp_path)
    fit = fit_sweep(tmp_path, laws=["chinchilla"], bootstrap=6)
    r = predict_loss(fit, 1e6, 1e8)
    assert r["law"] == "chinchilla" and r["interval"][0] <= r["interval"][1]
    b = plan_budget(fit, flops=1e16)
    assert b["N_opt"] * b["D_opt"] == pytest.approx(1e16 / 6)
    assert b["checkpoint_bytes"] == pytest.approx(4 * b["N_opt"], rel=1e-6)
    with pytest.raises(UserError, match="gpu_hours"):
        plan_budget(fit, gpu_hours=10)
