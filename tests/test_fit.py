"""llmscale.fit: the reference Chinchilla refit, recovery of known parameters, the held-out
split, compute-optimal allocation with each run's own FLOPs per token, robust cost laws."""

import numpy as np
import pytest

from llmscale.analysis import fit_sweep
from llmscale.fit.cost import fit_cost
from llmscale.fit.frontier import allocate, chinchilla_optimal, flops_model, isoflop
from llmscale.fit.laws import predict
from llmscale.fit.reference import PUBLISHED_CI, chinchilla_text
from llmscale.fit.robust import fit_law
from llmscale.fit.select import budget_groups, heldout_mask

TRUE = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 1500.0, "beta": 0.30}


def test_chinchilla_reference_within_published_intervals(tmp_path):
    """The shipped reference runs (package data: runs in any clone) refitted through the whole
    pipeline, as a plain CSV with D derived from C."""
    import csv
    import io

    rows = sorted(csv.DictReader(io.StringIO(chinchilla_text())), key=lambda r: float(r["loss"]))
    assert len(rows) == 245
    src = tmp_path / "chinchilla240.csv"
    with open(src, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:240])  # drop the 5 highest losses, as Besiroglu et al.
    fit = fit_sweep(src, laws=["chinchilla"], n_column="Model Size", c_column="Training FLOP",
                    loss_column="loss", bootstrap=0)
    p = fit.laws["chinchilla"].params
    for k, (lo, hi) in PUBLISHED_CI.items():
        assert lo <= p[k] <= hi, (k, p[k])
    assert any("C / (6 N)" in n for n in fit.notes)  # D was derived, and it says so
    h = fit.laws["chinchilla"].heldout
    assert len(h.run_ids) >= 0.15 * 240 and h.mean_abs_rel_err < 0.05
    assert (tmp_path / "fit.json").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chinchilla_recovers_known_parameters_with_noise(seed):
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(5, 8, 6), np.logspace(7, 10, 5)))
    loss = predict("chinchilla", TRUE, N=N, D=D) * np.exp(rng.normal(0, 0.003, N.size))
    p = fit_law("chinchilla", {"N": N, "D": D}, loss).params
    assert abs(p["E"] - TRUE["E"]) < 0.1
    assert abs(p["alpha"] - TRUE["alpha"]) < 0.06 and abs(p["beta"] - TRUE["beta"]) < 0.06
    # A and B are exponentially sensitive to the exponents: check the predictions instead.
    assert np.max(np.abs(predict("chinchilla", p, N=N, D=D) / loss - 1)) < 0.02


@pytest.mark.parametrize("seed", [0, 1])
def test_saturating_and_power_recover(seed):
    rng = np.random.default_rng(seed)
    N = np.logspace(4, 8, 12)
    true = {"E": 2.0, "A": 50.0, "alpha": 0.3}
    loss = predict("saturating", true, N=N) * np.exp(rng.normal(0, 0.002, N.size))
    p = fit_law("saturating", {"N": N}, loss).params
    assert abs(p["E"] - 2.0) < 0.1 and abs(p["alpha"] - 0.3) < 0.05
    pw = fit_law("power", {"N": N}, predict("power", {"A": 9.0, "alpha": 0.1}, N=N)).params
    assert pw["A"] == pytest.approx(9.0, rel=1e-3) and pw["alpha"] == pytest.approx(0.1, abs=1e-4)
    lin = fit_law("linear", {"N": N}, 3.0 - 1e-8 * N).params
    assert lin["a"] == pytest.approx(-1e-8, rel=1e-6) and lin["b"] == pytest.approx(3.0)


def test_heldout_takes_the_largest_compute_whole_budgets():
    C = np.array([1, 1.02, 2, 2.03, 3, 3.01, 4, 4.1, 5, 5.1]) * 1e12  # 5 budgets of 2 runs
    assert [len(g) for g in budget_groups(C)] == [2, 2, 2, 2, 2]
    mask = heldout_mask(C, frac=0.15)
    assert mask.tolist() == [False] * 8 + [True] * 2
    assert heldout_mask(np.ones(5)) is None  # one budget: nothing to extrapolate to
    assert heldout_mask(C, min_fit=9) is None


def test_compute_optimal_closed_form_and_isoflop():
    co = chinchilla_optimal(TRUE)
    C = np.array([1e15, 1e18])
    n_opt, d_opt = allocate(co, C)
    assert np.allclose(6 * n_opt * d_opt, C)
    Ns = np.logspace(3, 10, 20001)  # N_opt minimises the loss along C = 6 N D
    brute = Ns[np.argmin(predict("chinchilla", TRUE, N=Ns, D=1e18 / (6 * Ns)))]
    assert brute == pytest.approx(n_opt[1], rel=0.01)
    # IsoFLOP parabolas on exact chinchilla losses find the same optimum to within the grid
    Ns, Cs = [], []
    for c in (1e16, 1e17, 1e18):
        n_star = allocate(co, c)[0]
        for f in np.logspace(-1, 1, 7):
            Ns.append(n_star * f)
            Cs.append(c * (1 + 0.004 * f))  # within 4% of the budget
    Ns, Cs = np.array(Ns), np.array(Cs)
    iso = isoflop(Ns, Cs, predict("chinchilla", TRUE, N=Ns, D=Cs / (6 * Ns)),
                  [f"r{i}" for i in range(len(Ns))])
    assert len(iso.budgets) == 3 and all(len(b.run_ids) == 7 for b in iso.budgets)
    assert iso.a == pytest.approx(co.a, abs=0.05)


def test_isoflop_says_why_of_a_nearly_flat_parabola():
    """Noisy losses that barely differ give a parabola with its vertex decades away (here
    10^-99): no N_opt, no division by it, and the reason names the budget."""
    N = np.array([1e4, 2e4, 4e4] * 2)
    C = np.array([1e12] * 3 + [1e13] * 3)
    x = np.log10(N)
    flat = 2.0 + 1e-9 * (x - np.log10(2e4)) ** 2 + 1e-6 * x  # vertex near x = -500
    loss = np.where(C == 1e12, flat, 2.0 + 0.1 * (x - np.log10(2e4)) ** 2)
    iso = isoflop(N, C, loss, [f"r{i}" for i in range(6)])
    assert iso.a is None and "at C = 1e+12 the parabola is nearly flat" in iso.why_not
    assert [b.C for b in iso.budgets] == [1e13] and iso.budgets[0].inside


def test_tied_weights_allocation_uses_each_runs_flops_per_token():
    """With tied weights the output matmul (h x V) costs FLOPs that N does not count: C is the
    run's own flops_per_token x D, not 6 N D, and the allocation follows it."""
    V = 1024
    h = np.array([32, 48, 64, 96, 128, 192, 256.0])
    N = 8 * h * h  # LSTM weights only: the tied output matrix is the embedding
    fpt = 6 * (N + h * V)  # but every token still pays for the h x V output matmul
    q, r = flops_model(N, fpt)
    assert r < 0.95  # far from the 6N convention at these widths
    co = chinchilla_optimal(TRUE, q, r)
    C = 1e15
    n_opt, d_opt = allocate(co, C)
    assert q * n_opt ** r * d_opt == pytest.approx(C)  # on the runs' own FLOPs
    Ns = np.logspace(3, 10, 40001)  # brute force along C = q N^r D
    brute = Ns[np.argmin(predict("chinchilla", TRUE, N=Ns, D=C / (q * Ns ** r)))]
    assert brute == pytest.approx(float(n_opt), rel=0.01)
    six = allocate(chinchilla_optimal(TRUE), C)[1]
    assert float(d_opt) < 0.8 * float(six)  # 6 N D would promise far more tokens


def test_no_allocation_when_an_exponent_is_not_positive():
    assert chinchilla_optimal({"E": 1.3, "A": 2.9, "alpha": -0.02, "B": 7.9, "beta": 0.4}) is None
    assert chinchilla_optimal({"E": 1.3, "A": 2.9, "alpha": 0.3, "B": 7.9, "beta": 0.0}) is None


def test_cost_law_is_robust_to_one_slow_run():
    x = np.logspace(9, 13, 12)
    y = 2e-8 * x ** 0.9 * np.exp(np.random.default_rng(0).normal(0, 0.01, x.size))
    y[-1] *= 5  # the largest run on a busy machine
    fit = fit_cost("wall_time_s", "N*D", x, y, resamples=50)
    assert fit.params["p"] == pytest.approx(0.9, abs=0.02)
    ols = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert abs(ols - 0.9) > 0.05  # least squares is tilted by that one run


def test_bootstrap_resamples_runs_before_the_best_per_shape_selection():
    """A resample that did not draw a shape's best run reduces that shape to the runs it drew:
    the selection is redone inside each resample, so its variance reaches the intervals."""
    from llmscale.fit.select import reduce_shapes

    shape = ["a", "a", "b", "b"]
    loss = np.array([2.0, 2.5, 3.0, 3.2])
    rep, red, mult = reduce_shapes(shape, loss, "best")
    assert rep.tolist() == [0, 2] and red.tolist() == [2.0, 3.0] and mult.tolist() == [2, 2]
    rep, red, mult = reduce_shapes(shape, loss, "best", counts=np.array([0, 3, 1, 0]))
    assert rep.tolist() == [1, 2] and red.tolist() == [2.5, 3.0] and mult.tolist() == [3, 1]
    rep, red, mult = reduce_shapes(shape, loss, "mean", counts=np.array([1, 3, 0, 2]))
    assert red.tolist() == [pytest.approx(2.375), 3.2] and mult.tolist() == [4, 2]
