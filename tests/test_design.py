"""llmscale.design and `llmscale plan`: designs sized by the accounting to the budget, the
simulated interval widths against real bootstrap fits of independent draws from a known law,
the sweep YAML's round trip through `llmscale validate`, priors, and the bad inputs."""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import yaml

from llmscale import design
from llmscale.accounting import param_counts, run_accounting
from llmscale.cli import main
from llmscale.config import from_dict, load_config, with_overrides
from llmscale.fit.laws import predict
from llmscale.fit.pipeline import Runs, fit_runs
from llmscale.sweep.plan import plan_points

# A small pilot-like base run: the quickstart's language and model, sized by hidden_dim.
BASE = {
    "name": "pilot",
    "data": {"source": "synthetic", "synthetic_vocab": 64, "synthetic_zipf": 1.5},
    "tokenizer": {"kind": "bpe", "vocab_size": 384},
    "model": {"embedding_dim": 32, "hidden_dim": 32, "num_layers": 1},
    "train": {"batch_size": 32, "seq_len": 64, "lr": 1.0e-2},
    "eval": {"tokens": 100_000},
    "sweep": {"derived": {"model.embedding_dim": "model.hidden_dim"}},
    "output": {"dir": "runs/pilot"},
}
# A known law with Chinchilla-like exponents, its optimum at ~2e4-2e5 parameters for budgets of
# 1e10-1e12 FLOPs (what this base run trains in minutes on 2 cores), 3.1 to 2.0 nats there.
TRUE = {"E": 1.8, "A": 40.0, "alpha": 0.4, "B": 40.0, "beta": 0.35}
NOISE = 0.003  # 0.3% per run (log-normal)


def known_prior(**kw) -> design.Prior:
    return design.Prior(name="known", params=dict(TRUE), samples=(), noise=NOISE,
                        base=from_dict(BASE), **kw)


def in_worker(fn, *args):
    """fn(*args) in a spawned process, as the planner runs its fits (fit_runs runs BLAS on
    one thread there as anywhere: fit.robust.serial_blas)."""
    with ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmscale: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- sizing


def test_size_table_inverts_the_accounting():
    base = from_dict(BASE)
    table = design.size_table(base)
    for i in (0, 10, 200, 400):
        h = int(table.hidden[i])
        cfg = with_overrides(base, {"model.hidden_dim": h, "model.embedding_dim": h})
        assert table.N[i] == param_counts(cfg.vocab_size, cfg.model).nonembedding
        assert table.fpt[i] == run_accounting(cfg).flops_per_token
    assert np.all(np.diff(table.N) > 0)
    n = float(table.N[150]) * 1.001
    assert table.nearest(n) == 150


@pytest.mark.parametrize("spec", design.CANDIDATES, ids=lambda s: s.label)
def test_candidates_spend_the_budget_and_bracket_the_optimum(spec):
    prior = known_prior()
    table = design.size_table(prior.base)
    cost = design.cost_model()
    budget = design.Budget(flops=2e12)
    d = design.size_design(spec, table, prior.params, budget, cost)
    assert d is not None
    assert 0.97 * 2e12 <= d.flops <= 2e12  # the whole budget, never more
    assert d.runs == len(d.points) * spec.seeds
    batch = prior.base.train.batch_size * prior.base.train.seq_len
    assert all(p.D >= batch for p in d.points)
    iso = sorted({p.budget for p in d.points if p.budget})
    assert len(iso) == spec.budgets
    assert iso[-1] / iso[0] == pytest.approx(spec.spread, rel=1e-3)
    for c in iso:
        ns = [p.N for p in d.points if p.budget == c]
        opt = table.N[design.optimum(table, prior.params, c)]
        assert len(set(ns)) >= 3 and min(ns) < opt < max(ns)  # sizes bracket the optimum
        assert all(p.C <= c for p in d.points if p.budget == c)  # a budget buys whole tokens
    row = [p for p in d.points if p.budget is None]
    assert bool(row) == spec.fixed_d
    if row:
        assert len({p.D for p in row}) == 1 and len({p.N for p in row}) >= 3


def test_an_hours_budget_is_spent_at_the_dry_runs_rate():
    prior = known_prior()
    table = design.size_table(prior.base)
    cost = design.cost_model()
    d = design.size_design(design.CANDIDATES[0], table, prior.params,
                           design.Budget(gpu_hours=0.05), cost)
    assert d is not None
    hours = cost.device_hours(prior.base, d)
    assert 0.97 * 0.05 <= hours <= 0.05
    # the same estimate `llmscale sweep --dry-run` makes for each run, one run at a time
    from llmscale.sweep.estimate import assumed_rate

    rate = assumed_rate("cpu")
    secs = 0.0
    for p in d.points:
        cfg = with_overrides(prior.base, {"model.hidden_dim": p.hidden_dim,
                                          "model.embedding_dim": p.hidden_dim,
                                          "train.flops": p.flops})
        secs += rate.run_seconds(cfg, run_accounting(cfg))
    assert hours == pytest.approx(secs / 3600, rel=1e-6)
    # two workers sharing the machine: its hours are about the training wall time
    from llmscale.sweep.estimate import makespan

    two = design.cost_model(runs_per_device=2)
    per_run = [two.run_seconds(prior.base, p, two.slots) for p in d.points]
    wall = makespan(per_run, 2)
    assert 0.8 * wall <= two.device_hours(prior.base, d) * 3600 <= wall * (1 + 1e-9)


# ----------------------------------------------------------------------------- the simulation


def test_simulation_recovers_a_known_laws_interval_widths():
    """The planner's expected widths (median over simulated sweeps, few resamples each) against
    what `llmscale fit` shows on independent draws: the design's runs taken from its sweep YAML
    through the sweep planner and the accounting (not from llmscale.design), losses drawn from
    the known law here, each fitted by the fitter with its percentile bootstrap.

    Tolerance: each width within a factor 1.6 either way, their geometric mean within 1.3.
    Both sides are medians of noisy widths: one sweep's interval varies by ~25% from draw to
    draw (the reference's), and the planner's reading of 20 resamples by more; with seeds
    3, 4, 5 the planner's median over 30 sweeps came out 0.78-1.31x of a 40-sweep reference
    here (README, "Planning a sweep"), and REF = 16 adds ~8%. A wrong noise (2x gives ~2x
    widths) or a unit error in N or D fails it."""
    prior = known_prior()
    table = design.size_table(prior.base)
    d = design.size_design(design.CANDIDATES[0], table, prior.params,
                           design.Budget(flops=2e12), design.cost_model())
    [got] = design.evaluate([d], prior, design.parse_target("exponents"), sims=40, jobs=2,
                            seed=3)
    # the runs as a sweep of the emitted YAML would record them
    cfg = with_overrides(prior.base, {"sweep.zip": {
        "model.hidden_dim": [p.hidden_dim for p in d.points],
        "train.flops": [p.flops for p in d.points]}})
    accs = [run_accounting(sp.cfg) for sp in plan_points(cfg, log=lambda _m: None)]
    N = np.array([a.params_nonembedding for a in accs], dtype=float)
    D = np.array([a.tokens for a in accs], dtype=float)
    fpt = np.array([a.flops_per_token for a in accs], dtype=float)
    tasks = [(N, D, fpt, seed) for seed in range(REF)]
    with ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("spawn")) as pool:
        ref = list(pool.map(_reference_widths, tasks))
    ratios = []
    for i, k in enumerate(("alpha", "beta", "E")):
        want = float(np.median([r[i] for r in ref]))
        ratios.append(got.widths[k] / want)
        print(f"{k}: planned {got.widths[k]:.4g}, fitted {want:.4g}, "
              f"ratio {ratios[-1]:.3f}")  # shown with pytest -s
        assert 1 / 1.6 <= ratios[-1] <= 1.6, (k, got.widths[k], want)
    assert 1 / 1.3 <= float(np.exp(np.mean(np.log(ratios)))) <= 1.3, ratios


REF = 16
REF_BOOTSTRAP = 100  # percentile intervals from 100 resamples: within ~3% of 200's


def _reference_widths(task) -> tuple[float, float, float]:
    N, D, fpt, seed = task
    rng = np.random.default_rng(10_000 + seed)
    loss = predict("chinchilla", TRUE, N=N, D=D) * np.exp(rng.normal(0, NOISE, len(N)))
    runs = Runs(tuple(f"r{i}" for i in range(len(N))), N, D, fpt * D, loss, fpt,
                tuple((n, dd) for n, dd in zip(N, D, strict=True)))
    fit = fit_runs(runs, laws=("chinchilla",), bootstrap=REF_BOOTSTRAP, seed=seed)
    iv = fit.laws["chinchilla"].intervals
    return tuple(iv[k][1] - iv[k][0] if k in iv else math.inf for k in ("alpha", "beta", "E"))


def test_sweep_intervals_undo_the_small_sample_bias_of_percentiles():
    """400 sweeps of 10 resamples from N(0, 1) (the 95% interval is 3.92 wide): the raw 2.5-97.5
    percentiles of 10 samples are about 0.75x that; the planner's reading about 1x."""
    rng = np.random.default_rng(0)
    truth = 2 * 1.959964
    ests, raw = [], []
    for _ in range(400):
        x = rng.normal(0.0, 1.0, 10)
        lo, hi = np.percentile(x, [2.5, 97.5])
        raw.append(hi - lo)
        ests.append(design.Estimate(0.0, lo, hi, truth=0.0, samples=tuple(x)))
    widths, covers = design.sweep_intervals("alpha", ests)
    assert np.median(raw) / truth < 0.8
    assert np.median(widths) / truth == pytest.approx(1.0, abs=0.1)
    assert 0.9 <= covers.mean() <= 1.0
    # N_opt is read in log, its width a factor
    logn = [replace(e, truth=1e6, samples=tuple(1e6 * np.exp(0.1 * np.array(e.samples))))
            for e in ests]
    w, _ = design.sweep_intervals("n_opt", logn)
    assert np.median(np.log(w)) / (0.1 * truth) == pytest.approx(1.0, abs=0.1)
    # too few resamples: no interval
    w, c = design.sweep_intervals("E", [None, replace(ests[0], samples=(1.0, 2.0))])
    assert np.all(np.isinf(w)) and not c.any()


def test_simulation_is_deterministic_for_a_seed_whatever_the_workers():
    prior = replace(known_prior(), samples=(dict(TRUE), {**TRUE, "alpha": 0.5}))
    table = design.size_table(prior.base)
    d = design.size_design(design.CANDIDATES[1], table, prior.params,
                           design.Budget(flops=1e12), design.cost_model())
    t = design.parse_target("n_opt@1e14")
    a = design.simulate_all([d], prior, t, sims=4, bootstrap=3, jobs=1, seed=5)
    b = design.simulate_all([d], prior, t, sims=4, bootstrap=3, jobs=2, seed=5)
    assert a == b
    truths = {r.estimates["alpha"].truth for r in a[0]}
    assert truths <= {0.4, 0.5}  # the true law of each sweep is one of the prior's samples


# ----------------------------------------------------------------------------- the CLI


def test_plan_from_a_shipped_prior_writes_a_sweep_that_validate_accepts(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    assert main(["plan", "chinchilla", "--budget-flops", "1e19", "--target", "n_opt@1e21",
                 "--sims", "2", "--bootstrap", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "n_opt@1e+21 [hi/lo]" in printed and "best:" in printed and f"wrote {out}" in printed
    rows = [line for line in printed.splitlines()
            if " budgets/" in line and not line.startswith("best:")]
    assert len(rows) == len(design.CANDIDATES)
    text = out.read_text()
    assert text.startswith("# Written by `llmscale plan`")
    cfg = load_config(out)
    assert cfg.name == "plan" and cfg.output.dir == "runs/plan"
    assert cfg.data.path == "wikitext" and cfg.sweep.derived == {
        "model.embedding_dim": "model.hidden_dim"}
    assert set(cfg.sweep.zip) == {"model.hidden_dim", "train.flops"}
    points = plan_points(cfg, log=lambda _m: None)
    flops = sum(run_accounting(p.cfg).flops for p in points)
    assert 0.97e19 <= flops <= 1e19
    best = [line for line in printed.splitlines() if line.startswith("*")][0]
    assert f"  {len(points)}  " in best  # the table's runs of the best design = the YAML's
    assert main(["validate", str(out)]) == 0
    assert f"# sweep: {len(points)} runs" in capsys.readouterr().out
    # a second plan may replace a file that `llmscale plan` wrote
    assert main(["plan", "chinchilla", "--budget-flops", "2e19", "--target", "exponents",
                 "--sims", "2", "--bootstrap", "4", "--out", str(out)]) == 0
    assert load_config(out).sweep.zip != cfg.sweep.zip


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    """A pilot's fit.json (in a directory of its own): the real fitter on draws from the known
    law over a small IsoFLOP design of the base run."""
    d = tmp_path_factory.mktemp("pilot")
    fit = in_worker(_pilot_fit, str(d / "results.csv"))
    (d / "fit.json").write_text(fit.to_json())
    return d, fit


def _pilot_fit(source: str):
    prior = known_prior()
    table = design.size_table(prior.base)
    d = design.size_design(design.CANDIDATES[1], table, prior.params,
                           design.Budget(flops=3e11), design.cost_model())
    a = d.arrays()
    rng = np.random.default_rng(0)
    loss = predict("chinchilla", TRUE, N=a["N"], D=a["D"]) * np.exp(rng.normal(0, NOISE,
                                                                               len(a["N"])))
    runs = Runs(tuple(f"r{i}" for i in range(len(loss))), a["N"], a["D"], a["C"], loss, a["fpt"],
                tuple((int(p),) for p in a["point"]))
    return fit_runs(runs, bootstrap=30, seed=0, source=source)


def test_plan_from_a_pilot_fit_json(pilot, tmp_path, capsys):
    src, fit = pilot
    (tmp_path / "fit.json").write_text((src / "fit.json").read_text())
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    out = tmp_path / "next.yaml"
    argv = ["plan", str(tmp_path / "fit.json"), "--budget-flops", "3e12", "--target", "E",
            "--sims", "2", "--bootstrap", "4", "--out", str(out)]
    err = one_line_error(capsys, argv)  # no sweep.yaml beside it, no --config
    assert "--config" in err
    assert main([*argv, "--config", str(tmp_path / "base.yaml")]) == 0
    printed = capsys.readouterr().out
    entry = fit.laws["chinchilla"]
    assert f"alpha {entry.params['alpha']:.4g}" in printed
    assert f"the true law drawn from its {len(entry.finite_samples)} samples" in printed
    cfg = load_config(out)
    assert cfg.data.source == "synthetic" and cfg.tokenizer.vocab_size == 384
    assert main(["validate", str(out)]) == 0
    capsys.readouterr()
    # beside a sweep.yaml it needs no --config; a hand-made design can be compared
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "hand.yaml").write_text(yaml.safe_dump({**BASE, "sweep": {
        "budgets": [1e11, 3e11, 1e12], "grid": {"model.hidden_dim": [16, 32, 64, 128]},
        "derived": {"model.embedding_dim": "model.hidden_dim"}}}))
    out.unlink()
    assert main(["plan", str(tmp_path), "--budget-flops", "3e12", "--target", "exponents",
                 "--sims", "2", "--bootstrap", "4", "--compare", str(tmp_path / "hand.yaml"),
                 "--out", str(out)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(line.startswith("=") and "hand.yaml (as given)" in line and "  12  " in line
               for line in rows)


def test_the_noise_is_the_residuals_std_with_their_degrees_of_freedom(pilot):
    _, fit = pilot
    r = np.array([x.log_residual for x in fit.laws["chinchilla"].residuals])
    assert design.residual_noise(fit) == pytest.approx(math.sqrt(np.sum(r ** 2) / (len(r) - 5)))
    assert 0.5 * NOISE < design.residual_noise(fit) < 2 * NOISE


@pytest.mark.parametrize("argv, says", [
    ([], "the following arguments are required: prior"),
    (["nowhere", "--budget-flops", "1e12", "--target", "E"], "PRIOR 'nowhere' does not exist"),
    (["chinchilla", "--budget-flops", "1e12", "--target", "nopt@1e21"],
     "allowed: n_opt@C (e.g. n_opt@1e21), exponents, E, loss@N,D"),
    (["chinchilla", "--budget-flops", "1e12", "--target", "loss@1e9"], "not a target"),
    (["chinchilla", "--budget-flops", "1e12", "--target", "n_opt@-3"], "not a target"),
    (["chinchilla", "--target", "E"], "give one budget: --budget-flops C or --budget-gpu-hours H"
                                      " (neither was given)"),
    (["chinchilla", "--budget-flops", "1e12", "--budget-gpu-hours", "3", "--target", "E"],
     "(both were given)"),
    (["chinchilla", "--budget-flops", "0", "--target", "E"], "--budget-flops must be a positive"),
    (["chinchilla", "--budget-flops", "1e12", "--target", "E", "--sims", "1"],
     "--sims must be at least 2"),
    (["chinchilla", "--budget-flops", "1e12", "--target", "E"],
     "budget 1e+12 FLOPs is too small for any candidate design"),
    (["chinchilla", "--budget-gpu-hours", "1e-6", "--target", "E"],
     "budget 1e-06 GPU-hours is too small for any candidate design"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, says):
    assert says in one_line_error(capsys, ["plan", *argv])


def test_a_too_small_budget_says_what_would_do(capsys):
    err = one_line_error(capsys, ["plan", "chinchilla", "--budget-flops", "1e12", "--target",
                                  "E"])
    need = float(err.split("needs about ")[1].split(" FLOPs")[0])
    capsys.readouterr()
    assert main(["plan", "chinchilla", "--budget-flops", f"{need * 1.01}", "--target", "E",
                 "--sims", "2", "--bootstrap", "4"]) == 0


def test_unreadable_priors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "fit.json"
    bad.write_text("{not json")
    assert "is not a fit this llmscale can read" in one_line_error(
        capsys, ["plan", str(bad), "--budget-flops", "1e12", "--target", "E"])
    doc = json.loads(design.load_prior("chinchilla").to_json())
    for change, says in ((dict(params={**doc["params"], "alpha": -0.1}), "alpha must be > 0"),
                         (dict(noise=-1), "noise -1"),
                         (dict(extra=1), "unknown key(s) extra"),
                         (dict(extent={"N": [2, 1], "D": [1, 2]}), "extent: expected"),
                         (dict(base_config={"model": {"hiden_dim": 3}}), "base_config:")):
        f = tmp_path / "prior.json"
        f.write_text(json.dumps({**doc, **change}))
        err = one_line_error(capsys, ["plan", str(f), "--budget-flops", "1e19", "--target", "E"])
        assert str(f) in err and says in err, err
    # a sweep directory without a chinchilla fit: why, and what would give one
    d = tmp_path / "sweep"
    d.mkdir()
    runs = Runs(("a", "b", "c"), np.array([1e4, 2e4, 4e4]), np.full(3, 1e6), np.full(3, 1e12),
                np.array([3.0, 2.8, 2.9]), np.full(3, 6e4), ((1,), (2,), (3,)))
    (d / "fit.json").write_text(fit_runs(runs, bootstrap=0).to_json())
    err = one_line_error(capsys, ["plan", str(d), "--budget-flops", "1e12", "--target", "E"])
    assert "has no chinchilla law" in err and "varies both size and tokens" in err


def test_out_never_replaces_a_hand_made_file(tmp_path, capsys):
    mine = tmp_path / "quickstart.yaml"
    mine.write_text("name: mine\n")
    err = one_line_error(capsys, ["plan", "chinchilla", "--budget-flops", "1e19", "--target",
                                  "E", "--out", str(mine)])
    assert "was not written by `llmscale plan`" in err
    assert mine.read_text() == "name: mine\n"


# ----------------------------------------------------------------------------- priors and targets


def test_the_shipped_chinchilla_prior_is_the_fitters_refit():
    shipped = design.load_prior("chinchilla")
    fresh = in_worker(design.chinchilla_prior, 0)
    # 1e-4: L-BFGS-B stops within ~1e-5 of the optimum, and where depends on the BLAS build
    for k in design.PARAMS:
        assert shipped.params[k] == pytest.approx(fresh.params[k], rel=1e-4)
    assert shipped.noise == pytest.approx(fresh.noise, rel=1e-4)
    assert len(shipped.samples) == 200 and shipped.base == fresh.base
    assert "chinchilla" in design.named_priors()


def test_a_prior_file_round_trips(tmp_path):
    p = replace(known_prior(), samples=({**TRUE, "E": 1.75},), description="d", provenance="p",
                extent={"N": (1e4, 2e5), "D": (1e6, 3e7)})
    back = design.prior_from_json(p.to_json(), "x")
    assert back == replace(p, name="known")
    f = tmp_path / "mine.json"
    f.write_text(p.to_json())
    assert design.load_prior(str(f)) == back


def test_a_design_beyond_the_priors_fitted_runs_is_noted(pilot):
    _, fit = pilot
    prior = design.prior_from_fit(fit, from_dict(BASE), name="pilot")
    fitted = [p for p in fit.points if p.run_id in fit.laws["chinchilla"].fitted_run_ids]
    assert prior.extent == {"N": (min(p.N for p in fitted), max(p.N for p in fitted)),
                            "D": (min(p.D for p in fitted), max(p.D for p in fitted))}
    table = design.size_table(prior.base)
    cost = design.cost_model()
    near = design.size_design(design.CANDIDATES[1], table, prior.params,
                              design.Budget(flops=3e11), cost)  # the pilot's own design
    assert design.extrapolation(prior, near) == ""
    far = design.size_design(design.CANDIDATES[1], table, prior.params,
                             design.Budget(flops=3e13), cost)
    note = design.extrapolation(prior, far)
    assert note.startswith("the best design's runs reach N ") and "the law's fit:" in note
    assert design.extrapolation(replace(prior, extent=None), far) == ""


def test_the_plan_stays_within_the_priors_fit_where_it_can(pilot):
    """A pilot's law says nothing beyond its runs: each candidate is capped to stay within 2x
    of them (spending less than the budget), one that still reaches past them is marked ^, and
    the best is chosen among the others (README, "Planning a sweep": the design chosen without
    this rule came out 12-19x wider than predicted on the facts language)."""
    _, fit = pilot
    prior = design.prior_from_fit(fit, from_dict(BASE), name="pilot")
    table = design.size_table(prior.base)
    cost = design.cost_model()
    budget = design.Budget(flops=3e13)
    free = design.size_design(design.CANDIDATES[1], table, prior.params, budget, cost)
    capped = design.size_design(design.CANDIDATES[1], table, prior.params, budget, cost,
                                prior.extent)
    assert design.beyond_fit(prior, free) and not design.beyond_fit(prior, capped)
    assert capped.flops < free.flops <= budget.amount
    for k in ("N", "D"):
        assert max(getattr(p, k) for p in capped.points) <= 2 * prior.extent[k][1]
    # the widest bracket reaches below the pilot's runs whatever the cap: marked, not chosen
    specs = (design.CANDIDATES[3], design.CANDIDATES[1])
    p = design.plan(prior, design.parse_target("exponents"), budget, cost=cost, specs=specs,
                    sims=6, bootstrap=8, jobs=1)
    wide, narrow = p.evaluations
    assert wide.score < narrow.score  # the wide design alone would have been chosen
    assert design.beyond_fit(prior, wide.design) and p.best == 1
    text = design.describe(p, cost)
    assert " ^ " in text and "the best is chosen among the others" in text


def test_a_compared_config_is_its_planned_runs_with_repeats_as_the_fit_reduces_them(tmp_path):
    hand = with_overrides(from_dict(BASE), {"sweep.budgets": [1e11, 3e11],
                                            "sweep.grid": {"model.hidden_dim": [16, 32, 64],
                                                           "train.lr": [1e-2, 3e-3]},
                                            "sweep.seeds": [0, 1]})
    d = design.design_from_config(hand, "hand")
    planned = plan_points(hand, log=lambda _m: None)
    assert d.runs == len(planned) == 24 and len(d.points) == 6  # lr x seed repeat a point
    assert d.flops == pytest.approx(sum(run_accounting(p.cfg).flops for p in planned))
    assert {p.budget for p in d.points} == {1e11, 3e11}


@pytest.mark.parametrize("text, want", [
    ("n_opt@1e21", design.Target("n_opt", C=1e21)),
    ("exponents", design.Target("exponents")),
    ("E", design.Target("E")),
    ("loss@1e9,2e10", design.Target("loss", N=1e9, D=2e10)),
])
def test_targets(text, want):
    assert design.parse_target(text) == want


# ----------------------------------------------------------------------------- the warnings' hint


def test_an_unconstrained_law_names_the_plan_command(tmp_path):
    from llmscale.fit.guard import law_warnings

    fit = in_worker(_loose_fit, str(tmp_path / "results.csv"))
    warnings = law_warnings(fit, fit.laws["chinchilla"])
    hinted = [w for w in warnings if "llmscale plan" in w]
    assert len(hinted) == 1 and "unconstrained" in hinted[0]  # once per law
    assert sum("unconstrained" in w for w in warnings) >= 2
    cmd = hinted[0].split("`")[1]
    assert cmd == design.plan_command(fit)
    assert cmd.startswith(f"llmscale plan {tmp_path} --budget-flops ")
    flops = sum(p.C for p in fit.points)
    assert float(cmd.split("--budget-flops ")[1].split()[0]) == pytest.approx(10 * flops,
                                                                              rel=0.05)


def _loose_fit(source: str):
    """12 runs over 8x in N and 4x in D with 2% noise: chinchilla cannot pin A and B."""
    N, D = (a.ravel() for a in np.meshgrid([1e4, 2e4, 4e4, 8e4], [1e6, 2e6, 4e6]))
    loss = predict("chinchilla", TRUE, N=N, D=D) * np.exp(
        np.random.default_rng(1).normal(0, 0.02, len(N)))
    runs = Runs(tuple(f"r{i}" for i in range(len(N))), N, D, 6 * N * D, loss, 6 * N,
                tuple((i,) for i in range(len(N))))
    return fit_runs(runs, laws=("chinchilla",), bootstrap=50, seed=0, source=source)
