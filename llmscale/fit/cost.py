"""Cost laws y = k x^p (wall time, GPU-hours, checkpoint bytes against N D or N).

Fitted with the loss laws' robust objective: a Huber loss (delta 1e-3) of the log-residuals,
summed, L-BFGS from the least-squares line. One slow run (a busy machine, a cold cache) pulls a
least-squares line towards it; under Huber it counts like any other run that is off by as much.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from llmscale.fit.result import CostFit
from llmscale.fit.robust import HUBER_DELTA, LBFGS_OPTIONS

COST_LAWS = (  # (results column, x expression)
    ("wall_time_s", "N*D"),
    ("gpu_hours", "N*D"),
    ("tokens_per_s", "N"),
    ("checkpoint_bytes", "N"),
)
METHOD = "Huber(delta=1e-3) on log y, summed, L-BFGS-B"


def _objective(theta, lx, ly, delta):
    r = theta[0] + theta[1] * lx - ly
    a = np.abs(r)
    quad = a <= delta
    obj = float(np.sum(np.where(quad, 0.5 * r * r, delta * (a - 0.5 * delta))))
    g = np.where(quad, r, delta * np.sign(r))
    return obj, np.array([g.sum(), (g * lx).sum()])


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    lx, ly = np.log(x), np.log(y)
    m = lx.mean()  # centred: log k and p are nearly collinear at log x ~ 25
    p0, c0 = np.polyfit(lx - m, ly, 1)
    res = minimize(_objective, np.array([c0, p0]), args=(lx - m, ly, HUBER_DELTA), jac=True,
                   method="L-BFGS-B", options=LBFGS_OPTIONS)
    c, p = res.x
    return float(np.exp(c - p * m)), float(p)


def fit_cost(column: str, xexpr: str, x, y, resamples: int = 200, seed: int = 0,
             ci_level: float = 0.95) -> CostFit | None:
    """None with < 3 positive points or < 2 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    if len(x) < 3 or len(np.unique(x)) < 2:
        return None
    k, p = _fit(x, y)
    rng = np.random.default_rng(seed)
    ks, ps = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), size=len(x))
        if len(np.unique(x[idx])) < 2:
            continue
        kk, pp = _fit(x[idx], y[idx])
        ks.append(kk)
        ps.append(pp)
    q = 100 * (1 - ci_level) / 2
    ci = ({"k": tuple(float(v) for v in np.percentile(ks, [q, 100 - q])),
           "p": tuple(float(v) for v in np.percentile(ps, [q, 100 - q]))} if len(ks) >= 2 else {})
    return CostFit(column=column, x=xexpr, params={"k": k, "p": p}, intervals=ci,
                   ci_level=ci_level, n=int(len(x)), method=METHOD)
