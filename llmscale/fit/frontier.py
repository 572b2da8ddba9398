"""Compute-optimal allocation: closed form from a Chinchilla fit, IsoFLOP parabolas (approach 2).

Under C = 6 N D, minimising E + A N^-alpha + B D^-beta gives (Hoffmann et al. 2022, eq. 4)
N_opt = G (C/6)^a, D_opt = (C/6)^b / G, a = beta/(alpha+beta), b = alpha/(alpha+beta),
G = (alpha A / (beta B))^(1/(alpha+beta)).
"""

from __future__ import annotations

import numpy as np


def chinchilla_optimal(params: dict[str, float]) -> dict | None:
    """The closed-form allocation, or None when a fitted exponent is not positive (then loss
    does not fall with N or with D, and there is no trade-off to optimise)."""
    alpha, beta, A, B = params["alpha"], params["beta"], params["A"], params["B"]
    if not (alpha > 0 and beta > 0):
        return None
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta),
            "G": (alpha * A / (beta * B)) ** (1.0 / (alpha + beta)),
            "N_opt": "G*(C/6)^a", "D_opt": "(C/6)^b / G"}


def allocate(optimal: dict, C) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) at compute C from `chinchilla_optimal`'s dict."""
    C = np.asarray(C, dtype=float)
    return optimal["G"] * (C / 6) ** optimal["a"], (C / 6) ** optimal["b"] / optimal["G"]


def flop_budgets(C: np.ndarray, rel_tol: float = 0.05) -> list[np.ndarray]:
    """Indices of runs grouped into FLOP budgets: consecutive (sorted) runs within rel_tol of the
    group's smallest C."""
    order = np.argsort(C)
    groups: list[list[int]] = []
    for i in order:
        if groups and C[i] <= C[groups[-1][0]] * (1 + rel_tol):
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [np.asarray(g) for g in groups]


def isoflop(N: np.ndarray, C: np.ndarray, loss: np.ndarray, min_sizes: int = 3) -> dict | None:
    """Approach 2: per budget with >= min_sizes distinct N, a parabola of loss in x = log10 N;
    its vertex is N_opt(C). With >= 2 budgets, fit log N_opt = a log C + const and
    log D_opt = b log C + const (D_opt = C / (6 N_opt)). None when no budget qualifies."""
    N, C, loss = (np.asarray(v, dtype=float) for v in (N, C, loss))
    budgets = []
    for g in flop_budgets(C):
        if len(np.unique(N[g])) < min_sizes:
            continue
        x = np.log10(N[g])
        c2, c1, c0 = np.polyfit(x, loss[g], 2)
        if c2 <= 0:  # no minimum inside: the budget's sizes do not bracket the optimum
            continue
        xv = -c1 / (2 * c2)
        c = float(np.mean(C[g]))
        budgets.append({"C": c, "N_opt": float(10 ** xv), "D_opt": float(c / (6 * 10 ** xv)),
                        "loss_min": float(c0 - c1 * c1 / (4 * c2)),
                        "parabola": [float(c2), float(c1), float(c0)], "n_runs": int(len(g))})
    if not budgets:
        return None
    out: dict = {"budgets": budgets, "a": None, "b": None}
    if len(budgets) >= 2:
        lc = np.log([b["C"] for b in budgets])
        a, ka = np.polyfit(lc, np.log([b["N_opt"] for b in budgets]), 1)
        b, kb = np.polyfit(lc, np.log([b["D_opt"] for b in budgets]), 1)
        out.update(a=float(a), b=float(b), k_N=float(np.exp(ka)), k_D=float(np.exp(kb)),
                   N_opt="k_N*C^a", D_opt="k_D*C^b")
    return out
