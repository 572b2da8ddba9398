"""Check `llmscale plan`'s expected interval widths against real bootstrap fits of
independent draws, and time it.

For one prior law (held fixed: its samples are not drawn, so every sweep has the same true
law) and the candidate designs at a budget, it simulates

- the reference: REF independent sweeps, each fitted with `llmscale fit`'s 200 bootstrap
  resamples; the median of their 95% interval widths is what a user running the design
  would typically be shown;
- the planner's estimates, with SIMS sweeps of B resamples each (B from --bootstrap), read
  four ways (ESTIMATORS below; `planner` is what `llmscale plan` reports);

and prints each as a ratio to the reference, with a 95% interval for the ratio (resampling
the reference sweeps), the reference intervals' coverage of the true value, and the CPU time
per simulated sweep.

    python scripts/plan_check.py chinchilla --budget-flops 1e19 --target n_opt@1e21 \\
        --designs 0 --ref 30 --sims 50 --bootstrap 10 20
"""

from __future__ import annotations

import argparse
import math
import pickle
import time
from dataclasses import replace

import numpy as np


def main() -> int:
    from llmscale.design import (
        CANDIDATES,
        Budget,
        cost_model,
        load_prior,
        parse_target,
        simulate_all,
        size_design,
        size_table,
        width,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prior")
    ap.add_argument("--budget-flops", type=float, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--designs", type=int, nargs="+", default=[0],
                    help="indices into llmscale.design.CANDIDATES")
    ap.add_argument("--noise", type=float, default=None, help="replace the prior's noise")
    ap.add_argument("--ref", type=int, default=30, help="reference sweeps (200 resamples each)")
    ap.add_argument("--ref-bootstrap", type=int, default=200)
    ap.add_argument("--sims", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--save", default=None, help="keep the simulated fits in this pickle")
    ap.add_argument("--load", default=None, help="read them back instead of simulating")
    args = ap.parse_args()

    prior = load_prior(args.prior)
    prior = replace(prior, samples=(), noise=prior.noise if args.noise is None else args.noise)
    target = parse_target(args.target)
    table = size_table(prior.base)
    cost = cost_model()
    designs = [size_design(CANDIDATES[i], table, prior.params, Budget(flops=args.budget_flops),
                           cost) for i in args.designs]
    assert all(d is not None for d in designs), "a design does not fit the budget"
    kinds = {"target": target.kind, "alpha": "alpha", "beta": "beta", "E": "E"}
    print(f"prior {args.prior} (fixed law), noise {prior.noise:.4g}, target {target.label}, "
          f"budget {args.budget_flops:.3g} FLOPs")

    def timed(sims, b, seed):
        t0, c0 = time.time(), _cpu()
        res = simulate_all(designs, prior, target, sims=sims, bootstrap=b, jobs=args.jobs,
                           seed=seed)
        return res, time.time() - t0, _cpu() - c0

    if args.load:
        with open(args.load, "rb") as fh:
            saved = pickle.load(fh)
        ref, wall, cpu = saved["ref"]
        runs = saved["runs"]
    else:
        ref, wall, cpu = timed(args.ref, args.ref_bootstrap, 1000)
        runs = {b: timed(args.sims, b, 2000 + b) for b in args.bootstrap}
    if args.save:
        with open(args.save, "wb") as fh:
            pickle.dump({"ref": (ref, wall, cpu), "runs": runs}, fh)
    print(f"reference: {args.ref} sweeps x {args.ref_bootstrap} resamples per design: "
          f"{wall:.0f} s wall, {cpu:.0f} s CPU ({cpu / (args.ref * len(designs)):.2f} s per sweep)")
    rng = np.random.default_rng(0)
    for di, d in enumerate(designs):
        print(f"\ndesign {args.designs[di]}: {d.label} ({d.runs} runs, {d.flops:.3g} FLOPs)")
        print(f"{'quantity':10} {'reference':>10} {'covers':>7}  " + "  ".join(
            f"{'B=' + str(b) + ' ' + name:>22}" for b in args.bootstrap for name in ESTIMATORS))
        for q, kind in kinds.items():
            if q == "target" and target.kind in ("exponents", "E"):
                continue
            w_ref = np.array([width(kind, r.estimates[q]) for r in ref[di]])
            cov = np.mean([bool(r.estimates[q] and r.estimates[q].covers) for r in ref[di]])
            med_ref = np.median(w_ref)
            boot_ref = np.array([np.median(rng.choice(w_ref, len(w_ref))) for _ in range(2000)])
            cells = []
            for b in args.bootstrap:
                res = runs[b][0][di]
                for f in ESTIMATORS.values():
                    v = f(kind, [r.estimates[q] for r in res])
                    lo, hi = np.percentile(v / boot_ref, [2.5, 97.5])
                    cells.append(f"{v / med_ref:6.2f} [{lo:4.2f},{hi:4.2f}]")
            print(f"{q:10} {_fmt(med_ref, kind):>10} {100 * cov:6.0f}%  " +
                  "  ".join(f"{c:>22}" for c in cells))
    for b, (_, wall, cpu) in runs.items():
        n = args.sims * len(designs)
        print(f"B={b}: {n} sweeps in {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({cpu / n:.3f} s per sweep)")
    return 0


def _median_width(kind, ests) -> float:
    from llmscale.design import width

    return float(np.median([width(kind, e) for e in ests]))


def _spread(kind, ests) -> float:
    return _range95(np.array([_err(kind, e) for e in ests]), kind)


def _centred(kind, e) -> np.ndarray | None:
    if e is None or len(e.samples) < 4:
        return None
    x = np.array(e.samples, dtype=float)
    x = np.log(x) if kind == "n_opt" else x
    x = x[np.isfinite(x)]
    return x - np.median(x) if len(x) >= 4 else None


def _pooled(kind, ests) -> float:
    d = np.concatenate([c for c in (_centred(kind, e) for e in ests) if c is not None])
    lo, hi = np.percentile(d, [2.5, 97.5])
    return math.exp(hi - lo) if kind == "n_opt" else hi - lo


def _planner(kind, ests) -> float:
    from llmscale.design import sweep_intervals

    return float(np.median(sweep_intervals(kind, ests)[0]))


# planner: what `llmscale plan` reports (design.sweep_intervals); median: the median of the
# fitter's own percentile intervals from B resamples; pooled: the 95% range of every sweep's
# resamples pooled around each sweep's median; spread: the 95% range of the point estimates'
# errors across sweeps (the estimator's actual spread, which a calibrated interval matches).
ESTIMATORS = {"planner": _planner, "median": _median_width, "pooled": _pooled,
              "spread": _spread}


def _cpu() -> float:
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _err(kind, e) -> float:
    if e is None:
        return math.nan
    return math.log(e.value / e.truth) if kind == "n_opt" else e.value - e.truth


def _range95(err: np.ndarray, kind: str) -> float:
    """The 95% range of the errors, in the width's units (a factor for N_opt)."""
    err = err[np.isfinite(err)]
    lo, hi = np.percentile(err, [2.5, 97.5])
    return math.exp(hi - lo) if kind == "n_opt" else hi - lo


def _fmt(v: float, kind: str) -> str:
    return f"x{v:.3g}" if kind == "n_opt" else f"{v:.3g}"


if __name__ == "__main__":
    raise SystemExit(main())
