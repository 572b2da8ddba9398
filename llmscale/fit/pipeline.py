"""The whole fit of one set of runs, pure: runs in, a typed `FitResult` out (no file I/O).

Order of work, per law:
1. reduce: several runs of one shape (learning rates, seeds) to one point (`select.reduce_shapes`);
2. hold out the runs at the largest compute, the same runs for every law (`select.heldout_mask`);
3. select the points the law describes (`select_for_law`: the frontier for `compute`, the
   largest D for the laws of N);
4. fit all of them (`robust.fit_law`), and refit on bootstrap resamples of the *runs*, with
   steps 1 and 3 redone inside each resample, so selection variance shows in the intervals;
5. fit without the held-out runs and predict them: the held-out error every law is ranked by.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np

from llmscale.fit import select
from llmscale.fit.frontier import chinchilla_optimal, flops_model, isoflop
from llmscale.fit.guard import assess_law
from llmscale.fit.laws import LAW_NAMES, law_inputs, law_param_names, predict
from llmscale.fit.result import (
    MAX_SAMPLES,
    ComputeOptimal,
    CostFit,
    Extent,
    FitResult,
    Floor,
    Heldout,
    LawFit,
    Point,
    Residual,
    Skipped,
)
from llmscale.fit.robust import bootstrap as run_bootstrap
from llmscale.fit.robust import bootstrap_pool, fit_law, heldout_errors, serial_blas

# Distinct values of the inputs a law needs before its parameters are identified, checked on the
# points actually fitted (after the reduction and the law's selection), in the point fit and in
# every bootstrap resample. A term c X^-e vanishes at large X, so k distinct X pin k - 1
# differences of it: two parameters (c, e) need 3 distinct X beside the level that E (or the
# other terms) sets. Chinchilla's two terms need 3 distinct N and 3 distinct D (with 2 of
# either, A and alpha (or B and beta) trade off exactly); power has no E, so 2 N suffice.
NEEDS_DISTINCT = {"linear": {"N": 2}, "power": {"N": 2}, "saturating": {"N": 3},
                  "chinchilla": {"N": 3, "D": 3}, "compute": {"C": 3}}
METHODS = {"linear": "least squares on L"}
HUBER_METHOD = "Huber(delta=1e-3) on log L, summed, L-BFGS-B from a grid of starts"


@dataclass(frozen=True)
class Runs:
    """Completed runs as arrays (NaN where a value is unknown)."""

    run_id: tuple[str, ...]
    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    flops_per_token: np.ndarray
    shape: tuple  # runs with equal shape are reduced to one point

    def take(self, idx) -> Runs:
        idx = np.asarray(idx, dtype=int)
        return Runs(tuple(self.run_id[i] for i in idx), self.N[idx], self.D[idx], self.C[idx],
                    self.loss[idx], self.flops_per_token[idx], tuple(self.shape[i] for i in idx))


@dataclass(frozen=True)
class Reduced:
    """Points after reduction: `rep` indexes the representative run, `loss` the reduced loss,
    `mult` how many draws of the runs stand behind each point."""

    runs: Runs
    rep: np.ndarray
    loss: np.ndarray
    mult: np.ndarray

    def col(self, k: str) -> np.ndarray:
        return self.loss if k == "loss" else getattr(self.runs, k)[self.rep]


def shape_keys(runs: Runs) -> list[tuple]:
    """The reduction key of each run: its shape with its N and D. Two runs with a different N
    or D are never one shape, whatever columns the table had (a table without the model-shape
    columns would otherwise merge every model trained on one D into one point)."""
    def val(v: float):
        return float(v) if np.isfinite(v) else None  # NaN != NaN: unknown keys as None

    return [(s, val(n), val(d)) for s, n, d in zip(runs.shape, runs.N, runs.D, strict=True)]


def reduce(runs: Runs, how: str, counts=None, keys: list[tuple] | None = None) -> Reduced:
    rep, loss, mult = select.reduce_shapes(keys or shape_keys(runs), runs.loss, how, counts)
    return Reduced(runs, rep, loss, mult)


def select_for_law(law: str, pts: Reduced, allowed: np.ndarray, d_star: float | None
                   ) -> np.ndarray:
    """Indices (into the reduced points) of the points `law` is fitted to, among `allowed`."""
    ok = allowed.copy()
    for k in law_inputs(law):
        v = pts.col(k)
        ok &= np.isfinite(v) & (v > 0)
    idx = np.flatnonzero(ok)
    if law == "compute":
        return idx[select.frontier(pts.col("C")[idx], pts.loss[idx])]
    if law_inputs(law) == ["N"] and d_star is not None:
        d = pts.col("D")[idx]
        return idx[(d >= d_star / (1 + select.BUDGET_REL_TOL)) & (d <= d_star)]
    return idx


def _arrays(law: str, pts: Reduced, idx: np.ndarray, repeat: bool = False):
    times = pts.mult[idx] if repeat else np.ones(len(idx), dtype=int)
    X = {k: np.repeat(pts.col(k)[idx], times) for k in law_inputs(law)}
    return X, np.repeat(pts.loss[idx], times)


def why_not(law: str, pts: Reduced, idx: np.ndarray, what: str) -> str | None:
    need = len(law_param_names(law)) + 1
    for k, n in NEEDS_DISTINCT[law].items():
        distinct = len(np.unique(pts.col(k)[idx]))
        if 0 < distinct < n:
            return (f"{law} needs at least {n} distinct values of {k}; the {len(idx)} {what} "
                    f"have {distinct}" + (" (all runs of one size)"
                                          if k == "N" and distinct == 1 else ""))
    if len(idx) < need:
        return (f"{law} needs at least {need} {what} (parameters + 1) with "
                f"{', '.join(NEEDS_DISTINCT[law])}; the data has {len(idx)}")
    return None


def _describes(law: str, d_star: float | None) -> tuple[str, str]:
    """(what the law describes, what its points are called)."""
    if law == "compute":
        return "the lowest loss reached at each compute (the frontier, approach 1)", \
            "runs on the loss-vs-compute frontier"
    if law_inputs(law) == ["N"]:
        if d_star is None:
            return "loss against N over every run (no D recorded)", "runs"
        return (f"loss against N at D = {d_star:.3g} tokens (the largest D with 3 or more "
                "sizes)", f"sizes at D = {d_star:.3g} tokens")
    return "loss against N and D over every run", "runs"


def fit_one(law: str, pts: Reduced, held: np.ndarray | None, d_star: float | None, *,
            reduce_how: str, bootstrap: int, seed: int, ci_level: float,
            floor: float | None = None, pool=None) -> LawFit | str:
    """One law, or why it cannot be fitted (checked on the points it would be fitted to)."""
    describes, what = _describes(law, d_star)
    everything = np.ones(len(pts.rep), dtype=bool)
    idx = select_for_law(law, pts, everything, d_star)
    why = why_not(law, pts, idx, what)
    if why:
        return why
    X, y = _arrays(law, pts, idx)
    fit = fit_law(law, X, y)
    samples, intervals, notes = (), {}, []
    failed = at_bound_any = 0
    bound_share: dict[str, float] = {}
    if bootstrap > 0:
        bs = _bootstrap(law, fit, pts, d_star, reduce_how, bootstrap, seed, ci_level, pool)
        samples, intervals = tuple(bs["samples"]), bs["ci"]
        failed = bs["failed"]
        if failed:
            reasons = "; ".join(f"{n}x {why}" for why, n in bs["failed_reasons"].items())
            notes.append(f"{failed} of {bootstrap} bootstrap resamples "
                         f"({100 * failed / bootstrap:.0f}%) could not be fitted and are left "
                         f"out of the intervals: {reasons}")
        hits = bs["at_bound"]
        at_bound_any = sum(1 for h in hits if h)
        if hits:
            bound_share = {k: sum(k in h for h in hits) / len(hits)
                           for k in law_param_names(law) if any(k in h for h in hits)}
    ids = tuple(pts.runs.run_id[pts.rep[i]] for i in idx)
    pred = predict(law, fit.params, **X)
    residuals = tuple(Residual(rid, float(o), float(q), float(np.log(o / q)) if q > 0 else None)
                      for rid, o, q in zip(ids, y, pred, strict=True))
    entry = LawFit(law=law, inputs=tuple(law_inputs(law)), params=fit.params,
                   intervals=intervals, ci_level=ci_level, samples=samples[:MAX_SAMPLES],
                   resamples=bootstrap, method=METHODS.get(law, HUBER_METHOD),
                   objective=fit.objective, describes=describes, fitted_run_ids=ids,
                   heldout=_heldout(law, pts, held, d_star, what), residuals=residuals,
                   notes=tuple(notes), at_bound=fit.at_bound, bound_share=bound_share,
                   failed_resamples=failed, bound_resamples=at_bound_any,
                   centre={k: float(np.exp(np.mean(np.log(v)))) for k, v in X.items()})
    return replace(entry, warnings=assess_law(entry, floor))


def draw_resample(law: str, runs: Runs, keys: list[tuple], reduce_how: str,
                  d_star: float | None, rng: np.random.Generator):
    """One bootstrap resample of the runs, reduced and selected as the point fit was: its
    (X, loss) with each point repeated as often as it was drawn, or why it cannot be fitted
    (the same requirements as the point fit, on the points this resample would fit)."""
    n = len(runs.run_id)
    counts = np.bincount(rng.integers(0, n, n), minlength=n)
    r = reduce(runs, reduce_how, counts, keys)
    idx = select_for_law(law, r, np.ones(len(r.rep), dtype=bool), d_star)
    return why_not(law, r, idx, "points") or _arrays(law, r, idx, repeat=True)


def _bootstrap(law, fit, pts: Reduced, d_star, reduce_how, resamples, seed, ci_level,
               pool) -> dict:
    runs = pts.runs
    keys = shape_keys(runs)

    def resample(rng):
        return draw_resample(law, runs, keys, reduce_how, d_star, rng)

    from tqdm import tqdm

    with tqdm(total=resamples, desc=f"bootstrap {law}", leave=False,
              disable=not sys.stderr.isatty()) as bar:
        return run_bootstrap(fit, {}, np.zeros(0), resamples, seed, ci_level,
                             progress=lambda i: bar.update(), resample=resample, pool=pool)


def _heldout(law: str, pts: Reduced, held: np.ndarray | None, d_star, what: str) -> Heldout:
    """The law fitted without the held-out runs, scored on the held-out runs it describes: a
    law of N alone (the loss at one D) on those at that D, the compute law (the frontier) on
    those on the frontier of all runs. Scored on others, it would be blamed for what it leaves
    out (the D, a badly sized model)."""
    if held is None:
        return Heldout(reason="no held-out split (too few runs or budgets to hold the "
                              "largest-compute runs out, or none asked for)")
    idx = select_for_law(law, pts, ~held, d_star)
    why = why_not(law, pts, idx, what + " outside the held-out set")
    h = np.flatnonzero(held)
    if law_inputs(law) == ["N"] and d_star is not None:
        h = np.intersect1d(h, select_for_law(law, pts, held, d_star))
        if len(h) == 0:
            return Heldout(reason=f"no held-out run at D = {d_star:.3g} tokens, the D this law "
                                  "describes: not scored")
    if law == "compute":
        h = np.intersect1d(h, select_for_law(law, pts, np.ones(len(pts.rep), dtype=bool), d_star))
        if len(h) == 0:
            return Heldout(reason="no held-out run on the loss-vs-compute frontier, which this "
                                  "law describes: not scored")
    if why:
        return Heldout(run_ids=_ids(pts, h), reason=why)
    fit = fit_law(law, *_arrays(law, pts, idx))
    X = {k: pts.col(k)[h] for k in law_inputs(law)}
    err = heldout_errors(law, fit.params, X, pts.loss[h])
    return Heldout(run_ids=_ids(pts, h), errors=tuple(float(e) for e in err), n_fit=len(idx),
                   mean_abs_rel_err=float(np.mean(err)), max_abs_rel_err=float(np.max(err)))


def _ids(pts: Reduced, idx) -> tuple[str, ...]:
    return tuple(pts.runs.run_id[pts.rep[i]] for i in idx)


def rank(laws: dict[str, LawFit]) -> tuple[str, ...]:
    """Laws scored on held-out runs, reliable ones first (by held-out error), then the ones
    with warnings (by held-out error): a law that is not reliable never outranks one that is,
    whatever its error."""
    scored = [k for k, e in laws.items() if e.heldout.mean_abs_rel_err is not None]
    return tuple(sorted(scored, key=lambda k: (not laws[k].reliable,
                                               laws[k].heldout.mean_abs_rel_err)))


def fit_runs(runs: Runs, *, laws=None, reduce_how: str = "best", bootstrap: int = 200,
             seed: int = 0, ci_level: float = 0.95, source: str = "", n_column: str = "",
             loss_column: str = "", skipped: tuple[Skipped, ...] = (),
             cost: dict[str, CostFit] | None = None, floor: Floor | None = None,
             notes: tuple[str, ...] = (), model_kind: str | None = None,
             workers: int | None = 1, heldout: bool = True) -> FitResult:
    """Fit every requested law (default: all the data supports). A law that cannot be fitted
    is in `not_fitted` with the reason; the caller decides whether that is an error.

    Pure (no file I/O). `workers` > 1 fits the bootstrap resamples in that many processes
    (None: `robust.default_workers`); the result does not depend on it. Processes start from a
    fork server, which imports the caller's main module: a script that calls this with
    workers != 1 needs the usual `if __name__ == "__main__":` guard.

    `heldout=False` skips the held-out split and its refit (no law is scored, and each says
    so): for callers that read only the point fit and its intervals, such as the planner's
    simulated sweeps, where that refit from the grid of starts is a third of the CPU time."""
    # One canonical order: the bootstrap draws resamples by position, so runs listed in another
    # order (results.csv lists them as they finished, which varies with the workers' timing)
    # would give other resamples and other intervals for the same records. Measured on the
    # quickstart: beta [0.33, 1.02] in one order, [0.076, 1.05] in another.
    runs = runs.take(sorted(range(len(runs.run_id)),
                            key=lambda i: (runs.run_id[i], float(runs.loss[i]))))
    pts = reduce(runs, reduce_how)
    C, D = pts.col("C"), pts.col("D")
    has_c = np.isfinite(C)
    key = C if has_c.all() else pts.col("N")
    held = select.heldout_mask(key, min_fit=3) if heldout else None
    if not heldout:
        rule = "none: fit_runs(heldout=False) scores no law"
    elif has_c.all():
        rule = ("the runs at the largest compute (whole FLOP budgets, at least "
                f"{100 * select.HELDOUT_FRAC:.0f}% of the points; a law of N is scored on those "
                "at its D, the compute law on those on the frontier)")
    else:
        rule = "the runs at the largest N (C is not known for every point)"
    d_star = select.common_d(D, pts.col("N"))
    floor_value = None if floor is None else floor.in_units(loss_column)
    out_laws, not_fitted = {}, {}
    with serial_blas(), bootstrap_pool(workers, bootstrap) as pool:
        for law in laws or LAW_NAMES:
            r = fit_one(law, pts, held, d_star, reduce_how=reduce_how, bootstrap=bootstrap,
                        seed=seed, ci_level=ci_level, floor=floor_value, pool=pool)
            if isinstance(r, str):
                not_fitted[law] = r
            else:
                out_laws[law] = r
    q, r = flops_model(pts.col("N"), pts.col("flops_per_token"))
    notes = list(notes)
    co = _compute_optimal(out_laws.get("chinchilla"), pts, q, r, ci_level, notes)
    points = tuple(Point(run_id=pts.runs.run_id[i], N=float(runs.N[i]), D=_f(runs.D[i]),
                         C=_f(runs.C[i]), loss=float(v), flops_per_token=_f(runs.flops_per_token[i]))
                   for i, v in zip(pts.rep, pts.loss, strict=True))
    frontier_ids = _ids(pts, np.flatnonzero(has_c)[select.frontier(C[has_c], pts.loss[has_c])])
    return FitResult(source=source, n_column=n_column, loss_column=loss_column,
                     reduce=reduce_how, points=points, skipped=tuple(skipped), laws=out_laws,
                     not_fitted=not_fitted,
                     heldout_run_ids=_ids(pts, np.flatnonzero(held)) if held is not None else (),
                     heldout_rule=rule, ranking=rank(out_laws), frontier_run_ids=frontier_ids,
                     compute_optimal=co, cost=dict(cost or {}), floor=floor,
                     extent=Extent(*(_max(pts.col(k)) for k in ("N", "D", "C"))),
                     notes=tuple(notes), model_kind=model_kind)


def _compute_optimal(ch: LawFit | None, pts: Reduced, q: float, r: float, ci_level: float,
                     notes: list[str]) -> ComputeOptimal:
    alloc = None
    if ch is not None:
        alloc = chinchilla_optimal(ch.params, q, r, ch.samples, ci_level)
        if alloc is None:
            notes.append("no compute-optimal allocation from the chinchilla fit: a fitted "
                         "exponent (alpha or beta) is not positive")
    ok = np.isfinite(pts.col("C"))
    iso = None
    if ok.any():
        idx = np.flatnonzero(ok)
        iso = isoflop(pts.col("N")[idx], pts.col("C")[idx], pts.loss[idx], _ids(pts, idx), q, r)
    if abs(r - 1) > 0.02 or abs(q / 6 - 1) > 0.02:
        notes.append(f"FLOPs per token of these runs ≈ {q:.3g}·N^{r:.3f} (not 6N): the "
                     "allocation and IsoFLOP D use the runs' own FLOPs per token")
    return ComputeOptimal(chinchilla=alloc, isoflop=iso)


def _f(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _max(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(v.max()) if len(v) else None
