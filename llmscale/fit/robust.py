"""The robust fitter: Huber loss on log-residuals, summed over runs, L-BFGS from a grid of starts.

Why summed and not averaged: with delta = 1e-3 the averaged objective is ~1e-6 and L-BFGS-B's
relative tolerance stops it near the start (Besiroglu et al. 2024, who found exactly this in
the original Chinchilla fit). Gradients are analytic: finite differences would cost one extra
objective per parameter and are unreliable at this scale.

The bootstrap does not rerun the grid for every resample (4,500 starts x 1,000 resamples):
a resample's optimum is near the full-data one, so it starts from the full-data optimum, the
next-best distinct local optimum the grid found (or a seeded perturbation of the optimum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from llmscale.fit.laws import LAWS, Law, law_param_names, predict, start_grid, theta_to_params

HUBER_DELTA = 1e-3  # on log-loss residuals, as Hoffmann et al. and Besiroglu et al.
# Tight tolerances: the summed objective is ~1e-3 at the optimum, gradients ~1e-6 there.
LBFGS_OPTIONS = {"maxiter": 200, "ftol": 1e-10, "gtol": 1e-7}
# Starts far from the optimum (exponent 0, coefficient e^25) wander for hundreds of steps and
# never win; the grid is ordered by its objective and only the best GRID_STARTS are run.
GRID_STARTS = 16


@dataclass(frozen=True)
class Fit:
    law: str
    params: dict[str, float]  # published parameterisation (E, A, alpha, ...)
    theta: np.ndarray  # optimiser coordinates (log-coefficients, exponents); linear: (a, b)
    objective: float  # summed Huber (LSE laws) or residual sum of squares on L (linear)
    optima: tuple[np.ndarray, ...] = field(default=())  # distinct local optima, best first


# ----------------------------------------------------------------------------- objective


def _log_inputs(law: Law, X: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([np.log(np.asarray(X[t.input], dtype=float)) for t in law.terms])


def _objective(theta: np.ndarray, logX: np.ndarray, logy: np.ndarray, has_const: bool,
               delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber of (LSE model - log y) and its gradient in theta."""
    k = logX.shape[0]
    coef, expo = theta[0:2 * k:2], theta[1:2 * k:2]
    z = coef[:, None] - expo[:, None] * logX  # (terms, runs): log of each term
    if has_const:
        z = np.vstack([z, np.full((1, logX.shape[1]), theta[-1])])
    zmax = z.max(axis=0)
    ez = np.exp(z - zmax)
    s = ez.sum(axis=0)
    r = zmax + np.log(s) - logy
    absr = np.abs(r)
    quad = absr <= delta
    obj = float(np.sum(np.where(quad, 0.5 * r * r, delta * (absr - 0.5 * delta))))
    gw = (ez / s) * np.where(quad, r, delta * np.sign(r))  # d obj / d z, per term and run
    grad = np.empty_like(theta)
    grad[0:2 * k:2] = gw[:k].sum(axis=1)
    grad[1:2 * k:2] = -(gw[:k] * logX).sum(axis=1)
    if has_const:
        grad[-1] = gw[k].sum()
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


def fit_lse(law_name: str, X: dict[str, np.ndarray], loss: np.ndarray,
            starts: np.ndarray | None = None, delta: float = HUBER_DELTA,
            max_starts: int | None = GRID_STARTS) -> Fit:
    """Fit a log-sum-exp law by L-BFGS-B from each start (default: Hoffmann's grid); best kept.

    `max_starts` keeps only that many starts, those with the lowest initial objective (None:
    all of them).
    """
    law = LAWS[law_name]
    logX, logy = _log_inputs(law, X), np.log(np.asarray(loss, dtype=float))
    starts = start_grid(law) if starts is None else np.atleast_2d(starts)
    if max_starts is not None and len(starts) > max_starts:
        order = np.argsort(_grid_objectives(law, starts, logX, logy, delta), kind="stable")
        starts = starts[order[:max_starts]]
    # Centre the log-inputs: a - alpha log N = (a - alpha m) - alpha (log N - m). Uncentred,
    # a and alpha are almost collinear (log N ~ 20) and L-BFGS needs ~1000 steps per start.
    k = len(law.terms)
    m = logX.mean(axis=1)
    shift = np.zeros(starts.shape[1])
    results = []
    for s in starts:
        shift[0:2 * k:2] = -s[1:2 * k:2] * m
        res = minimize(_objective, s + shift, args=(logX - m[:, None], logy,
                                                    law.constant is not None, delta),
                       jac=True, method="L-BFGS-B", options=LBFGS_OPTIONS)
        th = res.x.copy()
        th[0:2 * k:2] += th[1:2 * k:2] * m
        if np.isfinite(res.fun) and np.all(np.isfinite(th)):
            results.append((float(res.fun), th))
    assert results, "no start gave a finite objective"
    results.sort(key=lambda t: t[0])
    optima: list[np.ndarray] = []
    for _, th in results:  # distinct optima, for the bootstrap's starts
        if all(np.max(np.abs(th - o)) > 1e-3 for o in optima):
            optima.append(th)
        if len(optima) == 8:
            break
    best_obj, best = results[0]
    return Fit(law_name, theta_to_params(law, best), best, best_obj, tuple(optima))


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


def bootstrap(fit: Fit, X: dict[str, np.ndarray], loss: np.ndarray, resamples: int,
              seed: int, ci_level: float = 0.95, progress=None, resample=None) -> dict:
    """Percentile bootstrap over runs: refit on `resamples` resamples (with replacement).

    `resample(rng)` draws one resample and returns its (X, loss), or None when the draw leaves
    too little to fit (it is skipped); by default, the rows of X and loss with replacement. A
    caller that selects runs (best of several learning rates, the frontier) does the selection
    inside `resample`, so selection variance shows in the intervals.

    Returns {"ci": {param: (lo, hi)}, "samples": [params, ...], "skipped": int}. `progress(i)`
    is called after each resample when given.
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
    samples: list[dict[str, float]] = []
    skipped = 0
    for i in range(resamples):
        drawn = resample(rng)
        if drawn is None:
            skipped += 1
        else:
            samples.append(fit_law(fit.law, drawn[0], drawn[1], starts=starts).params)
        if progress is not None:
            progress(i)
    q = 100 * (1 - ci_level) / 2
    ci = {}
    for name in law_param_names(fit.law) if len(samples) >= 2 else ():
        lo, hi = np.percentile(np.array([s[name] for s in samples]), [q, 100 - q])
        ci[name] = (float(lo), float(hi))
    return {"ci": ci, "samples": samples, "skipped": skipped}


def heldout_errors(law: str, params: dict[str, float], X: dict[str, np.ndarray],
                   loss: np.ndarray) -> np.ndarray:
    """|predicted - observed| / observed for each run."""
    pred = predict(law, params, **{k: np.asarray(v, dtype=float) for k, v in X.items()})
    return np.abs(pred - loss) / loss
