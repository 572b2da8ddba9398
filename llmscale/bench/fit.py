"""`llmscale bench fit`: the Chinchilla refit with bootstrap on the 240 reference points.

Target: 1,000 bootstrap resamples in < 60 s on 2 cores. Baseline measured in the same run: a
few resamples started from the grid (as the full-data fit is), to show what the warm starts
save. Prints figures, never pass/fail. The reference runs ship with the package
(llmscale/fit/data/).
"""

from __future__ import annotations

import time

import numpy as np


def main(quick: bool = False) -> None:
    from llmscale.fit.robust import serial_blas

    with serial_blas():  # as the fitter runs (one BLAS thread: see fit.robust.serial_blas)
        _bench(quick)


def _bench(quick: bool) -> None:
    from llmscale.fit.reference import PUBLISHED_CI, chinchilla_runs
    from llmscale.fit.robust import bootstrap, fit_law

    runs = chinchilla_runs()
    X, loss = {"N": runs["N"], "D": runs["D"]}, runs["loss"]
    resamples = 100 if quick else 1000

    t0 = time.perf_counter()
    fit = fit_law("chinchilla", X, loss)
    t_fit = time.perf_counter() - t0
    print(f"full-data fit (grid starts): {t_fit:.2f} s; "
          + ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items()))

    # Baseline: resamples fitted from the grid, like the full-data fit.
    rng = np.random.default_rng(1)
    n_base = 3
    t0 = time.perf_counter()
    for _ in range(n_base):
        idx = rng.integers(0, len(loss), len(loss))
        fit_law("chinchilla", {k: v[idx] for k, v in X.items()}, loss[idx])
    per_grid = (time.perf_counter() - t0) / n_base

    t0 = time.perf_counter()
    bs = bootstrap(fit, X, loss, resamples, seed=0)
    t_bs = time.perf_counter() - t0
    per_warm = t_bs / resamples
    print(f"bootstrap: {resamples} resamples in {t_bs:.1f} s ({1000 * per_warm:.1f} ms each; "
          f"target for 1,000: < 60 s); grid-started resample {1000 * per_grid:.0f} ms "
          f"-> warm starts {per_grid / per_warm:.1f}x faster")
    for k, (lo, hi) in PUBLISHED_CI.items():
        a, b = bs["ci"][k]
        print(f"  {k:<5} 95% CI [{a:.4g}, {b:.4g}]   published [{lo}, {hi}]")
