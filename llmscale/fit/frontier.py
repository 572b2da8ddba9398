"""Compute-optimal allocation: closed form from a Chinchilla fit, IsoFLOP parabolas (approach 2).

Training compute is C = f(N) D with f(N) the run's own FLOPs per token (read from the records),
modelled across the sweep as f(N) = q N^r. For an untied LSTM f(N) = 6 N exactly (q = 6,
r = 1: the textbook C = 6 N D); with tied weights the output matmul (h x V) costs FLOPs that
N no longer counts, and f(N) is several times 6 N at small widths. Minimising
E + A N^-alpha + B D^-beta along C = q N^r D gives (Hoffmann et al. 2022, eq. 4, generalised)

    N_opt = G (C/q)^a,  a = beta / (alpha + r beta),  G = (alpha A / (r beta B))^(1/(alpha + r beta))
    D_opt = C / (q N_opt^r) ∝ C^b,  b = alpha / (alpha + r beta).
"""

from __future__ import annotations

import numpy as np

from llmscale.fit.result import Allocation, IsoBudget, Isoflop
from llmscale.fit.select import budget_groups


def flops_model(N, flops_per_token) -> tuple[float, float]:
    """(q, r) with flops_per_token ≈ q N^r, least squares in log space over the runs that record
    it; (6, 1) when none does (the C = 6 N D convention)."""
    N, f = np.asarray(N, dtype=float), np.asarray(flops_per_token, dtype=float)
    ok = np.isfinite(N) & np.isfinite(f) & (N > 0) & (f > 0)
    if ok.sum() == 0:
        return 6.0, 1.0
    if len(np.unique(N[ok])) < 2:
        return float(np.mean(f[ok] / N[ok])), 1.0
    r, logq = np.polyfit(np.log(N[ok]), np.log(f[ok]), 1)
    return float(np.exp(logq)), float(r)


def optimal_exponents(params: dict[str, float], q: float = 6.0, r: float = 1.0
                      ) -> dict[str, float] | None:
    """a, b, G of the closed form; None when a fitted exponent is not positive (then loss does
    not fall with N or with D, and there is no trade-off to optimise)."""
    alpha, beta, A, B = params["alpha"], params["beta"], params["A"], params["B"]
    if not all(v is not None and np.isfinite(v) for v in (alpha, beta, A, B)):
        return None  # a bootstrap sample that overflowed
    if not (alpha > 0 and beta > 0 and A > 0 and B > 0):
        return None
    s = alpha + r * beta
    return {"a": beta / s, "b": alpha / s, "G": float((alpha * A / (r * beta * B)) ** (1.0 / s))}


def chinchilla_optimal(params: dict[str, float], q: float = 6.0, r: float = 1.0,
                       samples=(), ci_level: float = 0.95) -> Allocation | None:
    """The allocation of a Chinchilla fit, with its bootstrap samples' (a, b, G)."""
    best = optimal_exponents(params, q, r)
    if best is None:
        return None
    with np.errstate(all="ignore"):
        ss = tuple(s for s in (optimal_exponents(p, q, r) for p in samples)
                   if s is not None and all(np.isfinite(v) for v in s.values()))
    lo = 100 * (1 - ci_level) / 2
    intervals = {k: (float(np.percentile([s[k] for s in ss], lo)),
                     float(np.percentile([s[k] for s in ss], 100 - lo))) for k in ("a", "b")
                 } if len(ss) >= 2 else {}
    return Allocation(a=best["a"], b=best["b"], G=best["G"], q=q, r=r, samples=ss,
                      intervals=intervals)


def allocate(opt: Allocation, C, sample: dict[str, float] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) at compute C; `sample` evaluates one bootstrap sample's (a, G) instead."""
    C = np.asarray(C, dtype=float)
    a, G = (sample["a"], sample["G"]) if sample else (opt.a, opt.G)
    n = G * (C / opt.q) ** a
    return n, C / (opt.q * n ** opt.r)


def allocation_interval(opt: Allocation, C: float, ci_level: float = 0.95
                        ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Bootstrap percentile intervals of N_opt(C) and D_opt(C)."""
    if len(opt.samples) < 2:
        return None
    nd = np.array([[float(v) for v in allocate(opt, C, s)] for s in opt.samples])
    lo = 100 * (1 - ci_level) / 2
    n_lo, n_hi = np.percentile(nd[:, 0], [lo, 100 - lo])
    d_lo, d_hi = np.percentile(nd[:, 1], [lo, 100 - lo])
    return (float(n_lo), float(n_hi)), (float(d_lo), float(d_hi))


# A parabola whose vertex lies this many decades of N from the budget's sizes (their mean log)
# has no measured minimum; its N_opt is not even a number worth printing.
FAR_DECADES = 6


def isoflop(N, C, loss, run_ids, q: float = 6.0, r: float = 1.0,
            min_sizes: int = 3) -> Isoflop | None:
    """Approach 2: per budget (`select.budget_groups`) with >= min_sizes distinct N, a parabola
    of loss in x = log10 N; its vertex is N_opt(C), and D_opt = C / (q N_opt^r). The exponents
    log N_opt = a log C + const and log D_opt = b log C + const are stated only when at least 2
    budgets have a parabola and every one has its minimum inside its own sizes: a parabola
    without a minimum, or a vertex extrapolated past the sizes, is no measured optimum, and an
    exponent through it means nothing (records that are not an IsoFLOP design give such
    budgets by accident). `why_not` says which budget failed. None when no budget has
    min_sizes sizes."""
    N, C, loss = (np.asarray(v, dtype=float) for v in (N, C, loss))
    budgets, problems, parabolas = [], [], 0
    for g in budget_groups(C):
        if len(np.unique(N[g])) < min_sizes:
            continue
        parabolas += 1
        x = np.log10(N[g])
        c2, c1, c0 = np.polyfit(x, loss[g], 2)
        c = float(np.mean(C[g]))
        if c2 <= 0:
            problems.append(f"at C = {c:.3g} the parabola has no minimum (it opens downward)")
            continue
        x_opt = -c1 / (2 * c2)
        # A nearly flat parabola (noisy losses that barely differ) puts its vertex any number
        # of decades away; 10**x_opt would overflow or underflow to N = 0 and divide by it.
        if not np.isfinite(x_opt) or abs(x_opt - x.mean()) > FAR_DECADES:
            problems.append(f"at C = {c:.3g} the parabola is nearly flat: its minimum lies more "
                            f"than {FAR_DECADES} decades of N from the budget's sizes")
            continue
        n_opt = float(10 ** x_opt)
        lo, hi = float(N[g].min()), float(N[g].max())
        inside = lo <= n_opt <= hi
        if not inside:
            problems.append(f"at C = {c:.3g} the minimum N = {n_opt:.3g} lies outside the "
                            f"budget's sizes {lo:.3g}–{hi:.3g}")
        budgets.append(IsoBudget(C=c, N_opt=n_opt, D_opt=float(c / (q * n_opt ** r)),
                                 loss_min=float(c0 - c1 * c1 / (4 * c2)),
                                 parabola=(float(c2), float(c1), float(c0)),
                                 run_ids=tuple(run_ids[i] for i in g), inside=inside))
    if parabolas == 0:
        return None
    if parabolas < 2:
        return Isoflop(tuple(budgets), why_not=f"only one budget has {min_sizes} or more sizes")
    if problems:
        listed = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more budget(s)"
                                             if len(problems) > 3 else "")
        return Isoflop(tuple(budgets), why_not=f"{len(problems)} of {parabolas} budgets have no "
                                               f"minimum inside their sizes: {listed}")
    lc = np.log([b.C for b in budgets])
    a, ka = np.polyfit(lc, np.log([b.N_opt for b in budgets]), 1)
    b, kb = np.polyfit(lc, np.log([b.D_opt for b in budgets]), 1)
    return Isoflop(tuple(budgets), a=float(a), b=float(b), k_N=float(np.exp(ka)),
                   k_D=float(np.exp(kb)))
