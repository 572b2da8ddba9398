"""llmscale.analysis + fit.guard: results.csv -> the typed fit.json, one held-out set, groups by
model kind, guardrails on every prediction, the predict CLI."""

import math

import numpy as np
import pytest

from llmscale.analysis import fit_sweep, read_fit
from llmscale.cli import main
from llmscale.errors import UserError
from llmscale.fit.guard import plan_budget, predict_loss
from llmscale.fit.laws import predict
from llmscale.fit.result import FitResult
from llmscale.records import RunRecord, upsert_record

TRUE = {"E": 1.6, "A": 300.0, "alpha": 0.35, "B": 900.0, "beta": 0.3}
SIZES = (1e4, 3e4, 1e5, 3e5, 1e6)
TOKENS = (1e6, 3e6, 1e7, 3e7)


def _records(tmp_path, sizes=SIZES, tokens=TOKENS, seed=0, floor_nats=1.5, kind="lstm",
             law=TRUE, noise=0.002, name="results.csv"):
    """Runs drawn from a known Chinchilla law; two learning rates per shape (the worse one must
    be dropped by reduce=best); the source's floor set to `floor_nats` nats/token."""
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    for h, n in enumerate(sizes):
        for d in tokens:
            loss = float(predict("chinchilla", law, N=n, D=d) * np.exp(rng.normal(0, noise)))
            for lr, bump in ((1e-3, 0.0), (3e-3, 0.05)):
                upsert_record(path, RunRecord(
                    run_id=f"{kind}-n{h}-d{int(d)}-lr{lr}", status="completed", vocab_size=256,
                    embedding_dim=16, hidden_dim=16 * (h + 1), num_layers=1, tie_weights=False,
                    lr=lr, seed=0, model_kind=kind, params_nonembedding=int(n),
                    params_total=int(n) + 4096, flops_per_token=6 * int(n), tokens=int(d),
                    flops=6.0 * int(n) * int(d), val_loss=loss + bump, gpu_count=0,
                    gpu_hours=0.0, wall_time_s=2e-9 * n * d, tokens_per_s=1e9 / n,
                    checkpoint_bytes=int(4 * n), data_entropy_bpb=floor_nats / math.log(2),
                    val_bytes_per_token=1.0))
    upsert_record(path, RunRecord(run_id=f"{kind}-bad", status="diverged", params_nonembedding=10,
                                  val_loss=float("nan"), error="loss was NaN at step 3",
                                  model_kind=kind))
    return path


def test_fit_sweep_writes_the_typed_fit(tmp_path):
    _records(tmp_path)
    fit = fit_sweep(tmp_path, bootstrap=8)
    assert read_fit(tmp_path) == fit  # fit.json round-trips through the typed result
    assert FitResult.from_json(fit.to_json()) == fit
    assert [(s.run_id, s.status, s.reason) for s in fit.skipped] == \
        [("lstm-bad", "diverged", "loss was NaN at step 3")]
    assert len(fit.points) == 20  # 40 completed runs, best of 2 lrs per shape
    assert {"linear", "power", "saturating", "chinchilla", "compute"} == set(fit.laws)
    ch = fit.laws["chinchilla"]
    assert abs(ch.params["alpha"] - TRUE["alpha"]) < 0.1
    assert all(lo <= hi for lo, hi in ch.intervals.values())
    assert len(ch.samples) == 8
    # One held-out set: the runs at the largest compute, the same for every law of N and D; a
    # law of N alone is scored only on those at the D it describes
    assert fit.heldout_run_ids and ch.heldout.run_ids == fit.heldout_run_ids
    # the compute law (the frontier) on the held-out runs on the frontier
    assert fit.laws["compute"].heldout.run_ids == tuple(
        r for r in fit.heldout_run_ids if r in fit.frontier_run_ids)
    d_of = {p.run_id: p.D for p in fit.points}
    for k in ("linear", "power", "saturating"):
        ids = fit.laws[k].heldout.run_ids
        assert ids == tuple(r for r in fit.heldout_run_ids if d_of[r] == max(TOKENS)), k
        assert len(ids) == 2
    assert all(len(fit.laws[k].heldout.errors) == 2 for k in ("linear", "power"))
    assert "needs at least 4 sizes" in fit.laws["saturating"].heldout.reason  # 3 left to fit
    c_of = {p.run_id: p.C for p in fit.points}
    assert min(c_of[r] for r in fit.heldout_run_ids) >= max(
        c for r, c in c_of.items() if r not in fit.heldout_run_ids)
    assert ch.heldout.mean_abs_rel_err < 0.02 and fit.ranking[0] == "chinchilla"
    # Honest laws of N: fitted to the largest D only, and they say so
    sat = fit.laws["saturating"]
    assert "largest D" in sat.describes
    assert {p.D for p in fit.points if p.run_id in sat.fitted_run_ids} == {max(TOKENS)}
    assert fit.floor.entropy_nats_per_token == pytest.approx(1.5)
    assert fit.cost["wall_time_s"].params["p"] == pytest.approx(1.0, abs=1e-4)
    assert "gpu_hours" not in fit.cost  # every run was on CPU
    assert fit.compute_optimal.chinchilla.a > 0
    assert fit.compute_optimal.chinchilla.r == pytest.approx(1.0)
    assert not fit.groups  # one model kind
    # compute is the frontier L(C): only runs better than every cheaper run are fitted
    assert set(fit.laws["compute"].fitted_run_ids) <= set(fit.frontier_run_ids)
    observed = [r.observed for r in fit.laws["compute"].residuals]
    assert observed == sorted(observed, reverse=True)


def test_guardrails_extrapolation_and_in_range(tmp_path, capsys):
    """Records from a known law (E = 1.6) with the floor at 1.5, under E: an in-range query
    prints no warning; 10^6x beyond the data warns naming the extrapolation."""
    _records(tmp_path, noise=0.001)
    fit = fit_sweep(tmp_path, bootstrap=30)
    assert fit.laws["chinchilla"].reliable and fit.ranking[0] == "chinchilla"
    fj = str(tmp_path / "fit.json")
    assert main(["predict", fj, "--params", "1e5", "--tokens", "3e6"]) == 0
    out, err = capsys.readouterr()
    assert "warning:" not in err and "verdict: reliable" in out
    big = fit.extent.C * 10 ** 6
    assert main(["predict", fj, "--budget-flops", f"{big:g}"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert any("extrapolates" in ln and "C" in ln for ln in lines)
    assert main(["predict", fj, "--budget-flops", f"{big:g}", "--strict"]) == 2
    assert "--strict" in capsys.readouterr().err
    assert predict_loss(fit, 1e6, 3e7).reliable
    assert main(["predict", fj, "--params", "1e12", "--tokens", "3e7"]) == 0
    assert "extrapolates 1e+06x beyond the largest fitted N" in capsys.readouterr().err


def test_e_wholly_below_the_floor_is_a_warning_at_fit(tmp_path, capsys):
    """E = 1.6 from a known law, the source's floor at 2.5 (under every run's loss, above E's
    whole interval): `fit` warns, every prediction of that law warns (even in range), and a
    budget whose prediction falls below the floor says so."""
    _records(tmp_path, floor_nats=2.5, noise=0.001)
    assert main(["fit", str(tmp_path), "--bootstrap", "30", "--law", "chinchilla"]) == 0
    err = capsys.readouterr().err
    fit = read_fit(tmp_path)
    assert fit.laws["chinchilla"].intervals["E"][1] < 2.5
    assert any(ln.startswith("warning: the chinchilla law's E = ") and "wholly below the floor 2.5"
               in ln for ln in err.splitlines()), err
    assert main(["predict", str(tmp_path), "--params", "1e5", "--tokens", "3e6"]) == 0
    out, err = capsys.readouterr()
    assert "wholly below the floor 2.5" in err and "verdict: not reliable" in out
    big = fit.extent.C * 10 ** 6
    assert plan_budget(fit, flops=big).loss < 2.5
    assert main(["predict", str(tmp_path), "--budget-flops", f"{big:g}"]) == 0
    assert "falls below the floor 2.5" in capsys.readouterr().err


def test_plan_has_intervals_for_n_opt_and_d_opt(tmp_path):
    _records(tmp_path)
    fit = fit_sweep(tmp_path, laws=["chinchilla"], bootstrap=12)
    b = plan_budget(fit, flops=1e16)
    assert b.inputs["N"] * b.inputs["D"] * 6 == pytest.approx(1e16)
    lo, hi = b.N_opt_interval
    assert lo <= b.inputs["N"] <= hi and lo < hi
    assert b.D_opt_interval[0] < b.D_opt_interval[1]
    assert b.checkpoint_bytes == pytest.approx(4 * b.inputs["N"], rel=1e-3)
    with pytest.raises(ValueError, match="gpu_hours"):
        plan_budget(fit, gpu_hours=10)


def test_groups_by_model_kind_with_crossing(tmp_path):
    """Two kinds on one sweep: one fit per kind under groups; their compute laws cross."""
    lstm = {"E": 1.6, "A": 30.0, "alpha": 0.35, "B": 90.0, "beta": 0.3}
    other = {"E": 2.0, "A": 10.0, "alpha": 0.35, "B": 30.0, "beta": 0.3}  # better small, worse big
    _records(tmp_path, kind="lstm", law=lstm)
    _records(tmp_path, kind="transformer", law=other, seed=1)
    fit = fit_sweep(tmp_path, bootstrap=10)
    assert set(fit.groups) == {"lstm", "transformer"}
    for kind, g in fit.groups.items():
        assert g.model_kind == kind and all(p.run_id.startswith(kind) for p in g.points)
        assert g.laws["chinchilla"].heldout.run_ids == g.heldout_run_ids
    assert fit.groups["lstm"].laws["chinchilla"].params["E"] == pytest.approx(1.6, abs=0.1)
    assert fit.groups["transformer"].laws["chinchilla"].params["E"] == pytest.approx(2.0, abs=0.1)
    cross = [c for c in fit.crossings if c.law == "compute"]
    assert cross and cross[0].kinds == ("lstm", "transformer") and cross[0].at is not None
    assert fit.extent.C < cross[0].at < 1e3 * fit.extent.C  # beyond the data, as designed
    assert cross[0].interval[0] <= cross[0].at <= cross[0].interval[1]
    assert read_fit(tmp_path) == fit


def test_old_results_csv_without_new_columns(tmp_path):
    import csv

    path = _records(tmp_path, sizes=SIZES[:4], tokens=TOKENS[:3])
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    old = [c for c in rows[0] if c not in ("model_kind", "flops_per_token", "flops_budget",
                                           "sweep_point", "setup_s", "train_time_s")]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=old, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    fit = fit_sweep(tmp_path, bootstrap=0)
    assert not fit.groups and fit.compute_optimal.chinchilla.q == 6.0  # no FLOPs/token: 6N


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        fit_sweep(tmp_path / "nowhere")
    _records(tmp_path, sizes=(1e4, 1e5, 1e6), tokens=(1e6,))
    with pytest.raises(UserError, match=r"chinchilla needs at least 3 distinct values of D; "
                                        r"the 3 runs have 1"):
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
    (tmp_path / "fit.json").write_text('{"laws": {}}')
    with pytest.raises(UserError, match="schema"):
        read_fit(tmp_path)


def test_plain_csv_and_predict_cli(tmp_path, capsys):
    N = np.logspace(4, 7, 8)
    src = tmp_path / "plain.csv"
    src.write_text("size,L\n" + "\n".join(f"{n},{3.0 * n ** -0.05}" for n in N) + "\n")
    assert main(["fit", str(src), "--n", "size", "--loss", "L", "--law", "power",
                 "--bootstrap", "10"]) == 0
    assert "power" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "fit.json"), "--params", "1e7"]) == 0
    out = capsys.readouterr().out
    assert f"{3.0 * 1e7 ** -0.05:.4f}" in out and "interval" in out and "extrapolation" in out
    assert main(["predict", str(tmp_path / "fit.json"), "--budget-flops", "1e18"]) == 2
    assert "no chinchilla law" in capsys.readouterr().err


def test_compute_law_with_tokens_is_answered(tmp_path, capsys):
    _records(tmp_path)
    fit_sweep(tmp_path, bootstrap=0)
    fj = str(tmp_path / "fit.json")
    assert main(["predict", fj, "--law", "compute", "--params", "1e5", "--tokens", "1e7"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("compute: predicted loss")
    assert main(["predict", fj, "--law", "compute", "--params", "1e5"]) == 2
    err = capsys.readouterr().err
    assert "needs C" not in err and "--tokens" in err


def test_runs_no_longer_in_the_plan_are_left_out_unless_asked(tmp_path, capsys):
    """A shrunk sweep keeps its dropped runs in results.csv; fit, plot and report leave them out
    (and say so); --all-runs puts them back."""
    from llmscale.accounting import run_accounting
    from llmscale.config import from_dict
    from llmscale.sweep import plan_sweep
    from llmscale.sweep.state import claim_sweep_dir

    def cfg(widths):
        return from_dict({"name": "grow", "tokenizer": {"kind": "bytes", "vocab_size": None},
                          "sweep": {"grid": {"model.hidden_dim": widths,
                                             "train.tokens": [100_000, 300_000, 1_000_000]}}})

    full = cfg([8, 16, 32, 64])
    claim_sweep_dir(full, tmp_path, force=False)
    for r in plan_sweep(full):
        acc = run_accounting(r)
        n, d = acc.params_nonembedding, r.train.tokens
        upsert_record(tmp_path / "results.csv", RunRecord(
            run_id=r.run_id, sweep="grow", status="completed", hidden_dim=r.model.hidden_dim,
            params_nonembedding=n, flops_per_token=acc.flops_per_token, tokens=d,
            flops=float(acc.flops_per_token * d),
            val_loss=float(predict("chinchilla", TRUE, N=n, D=d))))
    claim_sweep_dir(cfg([8, 16, 32]), tmp_path, force=False)  # shrunk: hidden 64 dropped
    fit = fit_sweep(tmp_path, bootstrap=0)
    assert len(fit.points) == 9
    assert any("3 run(s)" in n and "--all-runs" in n for n in fit.notes)
    assert len(fit_sweep(tmp_path, bootstrap=0, all_runs=True).points) == 12
    assert main(["fit", str(tmp_path), "--bootstrap", "0"]) == 0
    assert "9 points" in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--all-runs"]) == 0
    assert "12 points" in (tmp_path / "report.md").read_text()
