"""Cost laws y = k x^p, fitted by least squares in log space, with percentile bootstrap CIs.

From the founding model P(M) = f(S, R, T): wall time and GPU-hours against N*D (training work),
tokens/s against N, checkpoint bytes against N.
"""

from __future__ import annotations

import numpy as np

COST_LAWS = (  # (results column, x expression)
    ("wall_time_s", "N*D"),
    ("gpu_hours", "N*D"),
    ("tokens_per_s", "N"),
    ("checkpoint_bytes", "N"),
)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p, logk = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(logk)), float(p)


def fit_cost(x, y, resamples: int = 200, seed: int = 0, ci_level: float = 0.95) -> dict | None:
    """{"params": {"k", "p"}, "ci": ..., "n"}; None with < 3 positive points or < 2 distinct x."""
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
    ci = ({"k": [float(v) for v in np.percentile(ks, [q, 100 - q])],
           "p": [float(v) for v in np.percentile(ps, [q, 100 - q])]} if ks else {})
    return {"params": {"k": k, "p": p}, "ci": ci, "ci_level": ci_level, "n": int(len(x))}
