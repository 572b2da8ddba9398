"""The robust fitter: Huber loss on log-residuals, summed over runs, L-BFGS from a grid of starts.

Why summed and not averaged: with delta = 1e-3 the averaged objective is ~1e-6 and L-BFGS-B's
relative tolerance stops it near the start (Besiroglu et al. 2024, who found exactly this in
the original Chinchilla fit). Gradients are analytic: finite differences would cost one extra
objective per parameter and are unreliable at this scale.

The bootstrap does not rerun the grid for every resample (4,500 starts x 1,000 resamples):
a resample's optimum is near the full-data one, so it starts from the full-data optimum, the
next-best distinct local optimum the grid found (or a seeded perturbation of the optimum).

Bounds. In log space a coefficient or E that the data do not need runs towards 0 (its log
towards -inf) with an ever smaller gradient, and L-BFGS stops wherever the objective's change
falls below `ftol`: a value such as E = 6.5e-5 is set by the tolerance, not by the data, and
the bootstrap, starting every resample from that optimum on a flat direction, reports an
interval that hugs it ([6.08e-5, 6.5e-5]). So every coordinate that can run away has an
explicit bound (`theta_bounds`): E between `SHARE_MIN` of the lowest loss (below that it changes
no log-loss by more than the Huber delta) and the highest loss, exponents within
`EXPONENT_BOUNDS`. A fit reports each parameter that ended at a bound (`Fit.at_bound`), and a
power term whose largest share of the predicted loss is below `SHARE_MIN` counts as at its
bound too (its coefficient has run to 0). Readers flag such a parameter as unconstrained.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from llmscale.fit.laws import LAWS, Law, law_param_names, predict, start_grid, theta_to_params

HUBER_DELTA = 1e-3  # on log-loss residuals, as Hoffmann et al. and Besiroglu et al.
# Tight tolerances: the summed objective is ~1e-5..1e-3 at the optimum, gradients ~1e-6 there,
# and L-BFGS-B's ftol is absolute below 1. Along a direction the data barely see (E running to
# its bound) the objective falls by ~1e-9 a step: ftol 1e-10 stopped such fits (and every
# bootstrap resample started from them) part-way, at a value set by the tolerance. 1e-14 lets
# them arrive; it costs 1.4x the CPU time of 1e-10 on the quickstart's fit (measured 2026-11-29).
LBFGS_OPTIONS = {"maxiter": 500, "ftol": 1e-14, "gtol": 1e-9}
# Starts far from the optimum (exponent 0, coefficient e^25) wander for hundreds of steps and
# never win; the grid is ordered by its objective and only the best GRID_STARTS are run. With
# the tolerances above, the best 1 already reached the optimum of the best 16 (objective equal
# to 1e-11 relative) on the quickstart's four log-sum-exp laws, the Chinchilla reference runs
# and 8 random designs of a known law (2026-11-29); 4 keep a margin and a second optimum for
# the bootstrap, at a quarter of the cost of 16.
GRID_STARTS = 4
# A term (or E) contributing less than this share of every predicted loss changes no log-loss by
# more than ~1e-3 (the Huber delta): the data cannot tell it from 0. E's lower bound.
SHARE_MIN = 1e-3
# Exponents outside these are no scaling law (a term falling 10^5x per decade of N, or rising
# 100x): a fit only gets there when the term is unconstrained. The bounds also keep exp() finite.
EXPONENT_BOUNDS = (-2.0, 5.0)
AT_BOUND_TOL = 1e-6  # a coordinate this close to its bound is at the bound


@dataclass(frozen=True)
class Fit:
    law: str
    params: dict[str, float]  # published parameterisation (E, A, alpha, ...)
    theta: np.ndarray  # optimiser coordinates (log-coefficients, exponents); linear: (a, b)
    objective: float  # summed Huber (LSE laws) or residual sum of squares on L (linear)
    optima: tuple[np.ndarray, ...] = field(default=())  # distinct local optima, best first
    at_bound: tuple[str, ...] = ()  # parameters that ended at an optimiser bound (see module doc)


# ----------------------------------------------------------------------------- objective


def _log_inputs(law: Law, X: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([np.log(np.asarray(X[t.input], dtype=float)) for t in law.terms])


def _objective(theta: np.ndarray, logX: np.ndarray, logy: np.ndarray, has_const: bool,
               delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber of (LSE model - log y) and its gradient in theta.

    Written for the bootstrap's ~10^5 calls on ~25 points, where numpy's per-call overhead is
    the cost: the Huber derivative is clip(r, -delta, delta), and the loss psi (r - psi / 2)
    with psi that derivative (r^2 / 2 inside delta, delta |r| - delta^2 / 2 outside); E's row
    is kept apart instead of stacked onto the terms'."""
    k = logX.shape[0]
    z = theta[0:2 * k:2, None] - theta[1:2 * k:2, None] * logX  # (terms, runs): log of each term
    zmax = z.max(axis=0)
    if has_const:
        zmax = np.maximum(zmax, theta[-1])
        ec = np.exp(theta[-1] - zmax)
    ez = np.exp(z - zmax)
    s = ez.sum(axis=0) + ec if has_const else ez.sum(axis=0)
    r = zmax + np.log(s) - logy
    psi = np.clip(r, -delta, delta)
    obj = float(psi @ (r - 0.5 * psi))
    w = psi / s  # d obj / d z = share of the term x psi
    gw = ez * w
    grad = np.empty_like(theta)
    grad[0:2 * k:2] = gw.sum(axis=1)
    grad[1:2 * k:2] = -(gw * logX).sum(axis=1)
    if has_const:
        grad[-1] = ec @ w
    return obj, grad


def _grid_objectives(law: Law, starts: np.ndarray, logX: np.ndarray, logy: np.ndarray,
                     delta: float) -> np.ndarray:
    """The objective at every start at once (to order the starts)."""
    k = len(law.terms)
    z = starts[:, 0:2 * k:2, None] - starts[:, 1:2 * k:2, None] * logX[None]
    if law.constant:
        z = np.concatenate([z, np.broadcast_to(starts[:, -1, None, None],
                                               (len(starts), 1, logX.shape[1]))], axis=1)
    r = np.logaddexp.reduce(z, axis=1) - logy[None]
    absr = np.abs(r)
    return np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta)).sum(axis=1)


# ----------------------------------------------------------------------------- fits


def theta_bounds(law: Law, loss: np.ndarray) -> list[tuple[float | None, float | None]]:
    """(lo, hi) per optimiser coordinate: log-coefficients free, exponents within
    EXPONENT_BOUNDS, log E from log(SHARE_MIN x the lowest loss) to log(the highest loss)."""
    out: list[tuple[float | None, float | None]] = []
    for _ in law.terms:
        out += [(None, None), EXPONENT_BOUNDS]
    if law.constant:
        out.append((float(np.log(SHARE_MIN * np.min(loss))), float(np.log(np.max(loss)))))
    return out


def at_bound(law: Law, theta: np.ndarray, logX: np.ndarray,
             bounds: list[tuple[float | None, float | None]]) -> tuple[str, ...]:
    """Published names of the parameters at a bound: a coordinate within AT_BOUND_TOL of its
    bound, and the coefficient of a term whose largest share of the predicted loss over the
    fitted points is below SHARE_MIN (it ran to 0, the bound of a positive coefficient)."""
    names = [n for t in law.terms for n in (t.coef, t.exponent)] + (
        [law.constant] if law.constant else [])
    out = [n for n, v, (lo, hi) in zip(names, theta, bounds, strict=True)
           if (lo is not None and v <= lo + AT_BOUND_TOL) or (hi is not None and v >= hi - AT_BOUND_TOL)]
    k = len(law.terms)
    z = theta[0:2 * k:2, None] - theta[1:2 * k:2, None] * logX  # (terms, points)
    if law.constant:
        z = np.vstack([z, np.full((1, logX.shape[1]), theta[-1])])
    share = np.exp(z - np.logaddexp.reduce(z, axis=0))  # each term's share of each prediction
    for i, t in enumerate(law.terms):
        if share[i].max() < SHARE_MIN and t.coef not in out:
            out.append(t.coef)
    return tuple(n for n in names if n in out)


# E as these shares of the lowest loss: the anchored starts (`anchored_starts`).
ANCHOR_SHARES = (0.5, 0.8, 0.9, 0.95, 0.98)


def anchored_starts(law: Law, loss: np.ndarray) -> np.ndarray:
    """Hoffmann's grid of coefficients and exponents with E anchored at shares of the lowest
    loss instead of Hoffmann's fixed log E in {-1, .., 1}.

    Why: when the runs come close to their floor, the optimum has E just under the lowest loss,
    and the fixed grid's E (e^-0.5, 1, e^0.5, ...) may not start near it. Ordered by their initial
    objective, the fixed grid's best starts can then all lie in another basin, one where an
    exponent near 0 makes its term a second constant and E collapses (on a 23-run IsoFLOP sweep
    of the facts language, 2026-11-29: E = 0.73 and beta = 0.015 at objective 7.4e-5, against
    E = 1.528 at 3.6e-5 from these starts). Both families run; the lowest objective wins."""
    g = start_grid(law)
    low = float(np.min(loss))
    return np.vstack([np.concatenate([g[:, :-1], np.full((len(g), 1), np.log(c * low))], axis=1)
                      for c in ANCHOR_SHARES])


def fit_lse(law_name: str, X: dict[str, np.ndarray], loss: np.ndarray,
            starts: np.ndarray | None = None, delta: float = HUBER_DELTA,
            max_starts: int | None = GRID_STARTS) -> Fit:
    """Fit a log-sum-exp law by L-BFGS-B from each start (default: Hoffmann's grid, and for laws
    with a constant the same grid with E anchored at the data, `anchored_starts`); best kept.

    `max_starts` keeps only that many starts of each family, those with the lowest initial
    objective (None: all of them). The optimiser's bounds are `theta_bounds`; starts outside are clipped in.
    """
    law = LAWS[law_name]
    logX, logy = _log_inputs(law, X), np.log(np.asarray(loss, dtype=float))
    families = ([start_grid(law)] + ([anchored_starts(law, np.exp(logy))] if law.constant else [])
                if starts is None else [np.atleast_2d(starts)])
    if max_starts is not None:  # the best of each family, so neither crowds out the other
        families = [f[np.argsort(_grid_objectives(law, f, logX, logy, delta),
                                 kind="stable")[:max_starts]] for f in families]
    starts = np.vstack(families)
    bounds = theta_bounds(law, np.exp(logy))
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    starts = np.clip(starts, lo, hi)
    # Centre the log-inputs: a - alpha log N = (a - alpha m) - alpha (log N - m). Uncentred,
    # a and alpha are almost collinear (log N ~ 20) and L-BFGS needs ~1000 steps per start.
    # Only log-coefficients move under centring, and they are unbounded: the bounds hold as they are.
    k = len(law.terms)
    m = logX.mean(axis=1)
    shift = np.zeros(starts.shape[1])
    results = []
    for s in starts:
        shift[0:2 * k:2] = -s[1:2 * k:2] * m
        res = minimize(_objective, s + shift, args=(logX - m[:, None], logy,
                                                    law.constant is not None, delta),
                       jac=True, method="L-BFGS-B", bounds=bounds, options=LBFGS_OPTIONS)
        th = res.x.copy()
        th[0:2 * k:2] += th[1:2 * k:2] * m
        if np.isfinite(res.fun) and np.all(np.isfinite(th)):
            results.append((float(res.fun), th))
    if not results:
        raise FloatingPointError(f"{law_name}: no start gave a finite objective")
    results.sort(key=lambda t: t[0])
    optima: list[np.ndarray] = []
    for _, th in results:  # distinct optima, for the bootstrap's starts
        if all(np.max(np.abs(th - o)) > 1e-3 for o in optima):
            optima.append(th)
        if len(optima) == 8:
            break
    best_obj, best = results[0]
    return Fit(law_name, theta_to_params(law, best), best, best_obj, tuple(optima),
               at_bound(law, best, logX, bounds))


def fit_linear(N: np.ndarray, loss: np.ndarray) -> Fit:
    """L = a N + b by ordinary least squares on L (the founding example's P(M) = aM + b)."""
    N, y = np.asarray(N, dtype=float), np.asarray(loss, dtype=float)
    # Centred and scaled for conditioning: N is ~1e5..1e10.
    mid, scale = float(np.mean(N)), float(np.ptp(N)) or 1.0
    design = np.stack([(N - mid) / scale, np.ones_like(N)], axis=1)
    (slope, level), *_ = np.linalg.lstsq(design, y, rcond=None)
    a, b = slope / scale, level - slope * mid / scale
    rss = float(np.sum((a * N + b - y) ** 2))
    return Fit("linear", {"a": float(a), "b": float(b)}, np.array([a, b]), rss)


def fit_law(law: str, X: dict[str, np.ndarray], loss: np.ndarray, *,
            starts: np.ndarray | None = None, max_starts: int | None = GRID_STARTS) -> Fit:
    if law == "linear":
        return fit_linear(X["N"], loss)
    return fit_lse(law, X, loss, starts=starts, max_starts=max_starts)


# ----------------------------------------------------------------------------- uncertainty


def _refit(law: str, starts: np.ndarray | None, draw) -> tuple[dict[str, float], tuple] | str:
    """One resample's fit: (params, parameters at a bound), or why it could not be fitted."""
    if isinstance(draw, str):
        return draw
    try:
        f = fit_law(law, draw[0], draw[1], starts=starts)
    except FloatingPointError as e:
        return str(e)
    return f.params, f.at_bound


def _refit_chunk(law: str, starts: np.ndarray | None, draws: list) -> list:
    return [_refit(law, starts, d) for d in draws]


def bootstrap(fit: Fit, X: dict[str, np.ndarray], loss: np.ndarray, resamples: int,
              seed: int, ci_level: float = 0.95, progress=None, resample=None,
              pool=None) -> dict:
    """Percentile bootstrap over runs: refit on `resamples` resamples (with replacement).

    `resample(rng)` draws one resample and returns its (X, loss), or a string saying why the
    draw cannot be fitted (too few distinct points: it is counted as failed); by default, the
    rows of X and loss with replacement. A caller that selects runs (best of several learning
    rates, the frontier) does the selection inside `resample`, so selection variance shows in
    the intervals. Every draw is made first, from one seeded generator, so the result does not
    depend on `pool` (a `bootstrap_pool`, or None: fitted here, one after another).

    Returns {"ci": {param: (lo, hi)}, "samples": [params, ...], "at_bound": [names, ...] (per
    sample), "failed": int, "failed_reasons": {why: count}}. `progress(i)` is called after each
    resample when given.
    """
    rng = np.random.default_rng(seed)
    loss = np.asarray(loss, dtype=float)
    if resample is None:
        def resample(rng):
            idx = rng.integers(0, len(loss), size=len(loss))
            return {k: np.asarray(v, dtype=float)[idx] for k, v in X.items()}, loss[idx]
    starts = None
    if fit.law != "linear":
        starts = np.stack(fit.optima[:2] or (fit.theta,))
        if len(starts) < 2:  # no second optimum: a seeded perturbation of the best instead
            starts = np.vstack([starts, fit.theta + rng.normal(0.0, 0.1, len(fit.theta))])
    draws = [resample(rng) for _ in range(resamples)]
    if pool is None or resamples < 2 * POOL_MIN_CHUNK:
        out = []
        for i, d in enumerate(draws):
            out.append(_refit(fit.law, starts, d))
            if progress is not None:
                progress(i)
    else:
        n = max(POOL_MIN_CHUNK, -(-resamples // (4 * pool.workers)))  # ~4 chunks a worker
        futures = [pool.executor.submit(_refit_chunk, fit.law, starts, draws[i:i + n])
                   for i in range(0, resamples, n)]
        out = []
        for f in futures:
            part = f.result()
            out += part
            for _ in part:
                if progress is not None:
                    progress(len(out) - 1)
    samples = [o[0] for o in out if not isinstance(o, str)]
    hits = [o[1] for o in out if not isinstance(o, str)]
    reasons: dict[str, int] = {}
    for o in out:
        if isinstance(o, str):
            reasons[o] = reasons.get(o, 0) + 1
    q = 100 * (1 - ci_level) / 2
    ci = {}
    for name in law_param_names(fit.law) if len(samples) >= 2 else ():
        lo, hi = np.percentile(np.array([s[name] for s in samples]), [q, 100 - q])
        ci[name] = (float(lo), float(hi))
    return {"ci": ci, "samples": samples, "at_bound": hits,
            "failed": resamples - len(samples), "failed_reasons": reasons}


@contextmanager
def serial_blas():
    """numpy's and scipy's BLAS on one thread while fitting (and while `llmscale sweep` runs its
    analysis). L-BFGS-B calls BLAS on 5x5 matrices, ~10^5 times in a bootstrap; OpenBLAS's
    threads cost far more than they save there, and idle they spin: a 25-point chinchilla fit
    took 1.8-4.2 s of CPU with its 2 threads and 0.25 s with one (2026-11-29, 2 cores at load
    ~15); `llmscale fit` of the 26-run quickstart 249 s of CPU against 15 s."""
    # A limit reaches only the libraries loaded when it is set: numpy and scipy each bring
    # their own OpenBLAS, so load both first.
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _worker_init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # for the worker's life (see serial_blas)


POOL_MIN_CHUNK = 8  # resamples per task at least: a task costs ~1 ms to send and receive


@dataclass(frozen=True)
class Pool:
    executor: Any  # a concurrent.futures.ProcessPoolExecutor
    workers: int


# A pool costs ~1-2 s to start (a fork server importing numpy and scipy) and pays only when
# CPUs are idle: on 2 cores at load ~10, the quickstart's fit took as long with 2 processes as
# with 1 (2026-11-29). So the default asks for the idle CPUs, and none below this many resamples.
POOL_MIN_RESAMPLES = 100


def default_workers(resamples: int) -> int:
    """Processes for the bootstrap by default: the CPUs this process may use that are idle now
    (by the 1-minute load average), 1 for a small bootstrap."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if resamples < POOL_MIN_RESAMPLES or not hasattr(os, "getloadavg"):
        return 1
    return max(1, min(cpus, round(cpus - os.getloadavg()[0])))


@contextmanager
def bootstrap_pool(workers: int | None, resamples: int):
    """A process pool for the bootstrap's refits, or None when one process is asked for (or
    there is too little work to pay for starting processes). `workers` None: default_workers.
    The result does not depend on the pool (`bootstrap` draws every resample first).

    Workers come from a fork server, not a fork of this process: the caller may have torch's
    OpenMP threads running (the post-sweep analysis), and a forked child of those can hang."""
    n = default_workers(resamples) if workers is None else workers
    if n < 1:
        raise ValueError(f"workers={n}; give 1 or more")
    if n == 1 or resamples < 2 * POOL_MIN_CHUNK:
        yield None
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["llmscale.fit.robust"])
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init) as executor:
        yield Pool(executor, n)


def heldout_errors(law: str, params: dict[str, float], X: dict[str, np.ndarray],
                   loss: np.ndarray) -> np.ndarray:
    """|predicted - observed| / observed for each run."""
    pred = predict(law, params, **{k: np.asarray(v, dtype=float) for k, v in X.items()})
    return np.abs(pred - loss) / loss
