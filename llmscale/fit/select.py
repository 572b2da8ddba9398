"""Which runs a law is fitted to and which are held out: pure functions on arrays.

One rule for each choice, used by the fitter and (through the fit result) by every figure:

- `budget_groups`: runs grouped into FLOP budgets (IsoFLOP curves, the held-out set);
- `frontier`: the lower envelope of loss against compute (approach 1);
- `common_d`: the token count a law of N alone describes (the largest D with enough sizes);
- `heldout_mask`: the one held-out set, the runs at the largest compute;
- `reduce_shapes`: several runs of one shape (learning rates, seeds) to one point, with the
  multiplicity a bootstrap resample gave it.
"""

from __future__ import annotations

import numpy as np

BUDGET_REL_TOL = 0.05  # runs within 5% of a budget's smallest C share that budget
HELDOUT_FRAC = 0.15  # at least this share of the points is held out (whole budgets)


def budget_groups(C: np.ndarray, rel_tol: float = BUDGET_REL_TOL) -> list[np.ndarray]:
    """Indices of runs grouped into FLOP budgets, smallest first: consecutive (sorted) runs
    within rel_tol of the group's smallest C. A planned budget's runs miss it by the rounding
    of their token counts, well under 5%."""
    C = np.asarray(C, dtype=float)
    order = np.argsort(C, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and C[i] <= C[groups[-1][0]] * (1 + rel_tol):
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [np.asarray(g, dtype=int) for g in groups]


def frontier(C: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of the runs on the loss-vs-compute frontier: each has a lower loss than every run
    with less compute (ties in C: the lower loss first). The `compute` law is fitted to these."""
    C, loss = np.asarray(C, dtype=float), np.asarray(loss, dtype=float)
    out, best = [], np.inf
    for i in np.lexsort((loss, C)):
        if loss[i] < best:
            out.append(int(i))
            best = loss[i]
    return np.asarray(out, dtype=int)


def common_d(D: np.ndarray, N: np.ndarray, min_sizes: int = 3,
             rel_tol: float = BUDGET_REL_TOL) -> float | None:
    """The token count a law of N alone describes: the largest D (grouped within rel_tol) at
    which at least `min_sizes` distinct sizes were trained, else the largest D. A law of N is
    the loss at one D; the largest D is where the sweep's sizes are closest to converged.
    None when no run records D."""
    D, N = np.asarray(D, dtype=float), np.asarray(N, dtype=float)
    ok = np.isfinite(D)
    if not ok.any():
        return None
    groups = budget_groups(np.where(ok, D, 0.0)[ok], rel_tol)
    d, n = D[ok], N[ok]
    for g in reversed(groups):
        if len(np.unique(n[g])) >= min_sizes:
            return float(np.max(d[g]))
    return float(np.max(d))


def heldout_mask(C: np.ndarray, frac: float = HELDOUT_FRAC, min_fit: int = 1) -> np.ndarray | None:
    """The runs at the largest compute: whole budgets (`budget_groups`) from the top until at
    least `frac` of the runs are out. None when that leaves fewer than `min_fit` runs or fewer
    than two budgets to fit."""
    C = np.asarray(C, dtype=float)
    groups = budget_groups(C)
    target = max(1, int(np.ceil(frac * len(C))))
    mask = np.zeros(len(C), dtype=bool)
    for k, g in enumerate(reversed(groups)):
        mask[g] = True
        if mask.sum() >= target:
            if (~mask).sum() < min_fit or len(groups) - k - 1 < 2:
                return None
            return mask
    return None


def reduce_shapes(shape: list, loss: np.ndarray, how: str = "best",
                  counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(representative index, reduced loss, multiplicity) per shape present.

    best: the lowest-loss run of each shape (selection over learning rates or seeds); mean: the
    mean over its runs (weighted by counts). `counts[i]` is how often run i was drawn (a
    bootstrap resample; default once each); runs drawn 0 times are absent. The multiplicity of a
    shape is the number of draws of its runs, so a resample weighs shapes as it drew them."""
    loss = np.asarray(loss, dtype=float)
    counts = np.ones(len(loss), dtype=int) if counts is None else np.asarray(counts)
    groups: dict = {}
    for i, s in enumerate(shape):
        if counts[i] > 0:
            groups.setdefault(s, []).append(i)
    reps, values, mult = [], [], []
    for members in groups.values():
        m = np.asarray(members)
        if how == "best":
            best = m[np.argmin(loss[m])]
            reps.append(int(best))
            values.append(loss[best])
        else:
            reps.append(int(m[0]))
            values.append(float(np.average(loss[m], weights=counts[m])))
        mult.append(int(counts[m].sum()))
    return np.asarray(reps, dtype=int), np.asarray(values), np.asarray(mult, dtype=int)
