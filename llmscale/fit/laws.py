"""Law definitions and their one evaluator, `predict`.

Every saturating law is fitted in log-sum-exp form (Hoffmann et al. 2022, approach 3;
Besiroglu et al. 2024): log L_hat = LSE(a - alpha log N, b - beta log D, e), with A = exp(a),
B = exp(b), E = exp(e). A law here is a list of power terms coef * X^-exponent plus, optionally,
a constant; `theta` (what the optimiser moves) holds log-coefficients and exponents.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np


@dataclass(frozen=True)
class Term:
    coef: str  # published name of the coefficient (A, B); theta holds its log
    exponent: str  # published name of the exponent (alpha, beta, gamma)
    input: str  # N, D or C


@dataclass(frozen=True)
class Law:
    name: str
    terms: tuple[Term, ...]
    constant: str | None  # E, the irreducible loss (theta holds log E), or None

    @property
    def inputs(self) -> list[str]:
        return [t.input for t in self.terms]

    @property
    def param_names(self) -> list[str]:
        names = [n for t in self.terms for n in (t.coef, t.exponent)]
        return names + ([self.constant] if self.constant else [])

    @property
    def n_params(self) -> int:
        return len(self.param_names)


# `linear` (L = a N + b) is the founding baseline; it is fitted by least squares on L itself
# (see robust.fit_linear), not through the log-sum-exp machinery.
LAWS: dict[str, Law] = {
    "power": Law("power", (Term("A", "alpha", "N"),), None),
    "saturating": Law("saturating", (Term("A", "alpha", "N"),), "E"),
    "chinchilla": Law("chinchilla", (Term("A", "alpha", "N"), Term("B", "beta", "D")), "E"),
    "compute": Law("compute", (Term("A", "gamma", "C"),), "E"),
}
LAW_NAMES = ("linear", "power", "saturating", "chinchilla", "compute")
LINEAR_PARAMS = ("a", "b")


def law_inputs(law: str) -> list[str]:
    return ["N"] if law == "linear" else LAWS[law].inputs


def law_param_names(law: str) -> list[str]:
    return list(LINEAR_PARAMS) if law == "linear" else LAWS[law].param_names


def predict(law: str, params: dict[str, float], N=None, D=None, C=None) -> np.ndarray:
    """The law's loss at the given inputs (arrays broadcast); the one formula evaluator."""
    given = {"N": N, "D": D, "C": C}
    if law not in LAW_NAMES:
        raise ValueError(f"unknown law {law!r}; known: {', '.join(LAW_NAMES)}")
    missing = [k for k in law_inputs(law) if given[k] is None]
    if missing:
        raise ValueError(f"law {law!r} needs {', '.join(missing)}")
    if law == "linear":
        return params["a"] * np.asarray(N, dtype=float) + params["b"]
    spec = LAWS[law]
    out = np.asarray(params[spec.constant], dtype=float) if spec.constant else np.asarray(0.0)
    # A bootstrap sample far out (negative exponent) may overflow: inf is the honest answer.
    with np.errstate(over="ignore", invalid="ignore"):
        for t in spec.terms:
            x = np.asarray(given[t.input], dtype=float)
            out = out + params[t.coef] * x ** -params[t.exponent]
    return np.asarray(out, dtype=float)


def predict_cost(params: dict[str, float], x) -> np.ndarray:
    """A cost law y = k x^p (llmscale.fit.cost)."""
    return params["k"] * np.asarray(x, dtype=float) ** params["p"]


# ---------------------------------------------------------------- theta <-> published parameters


def theta_to_params(law: Law, theta: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    # A bootstrap resample of an unconstrained law can run a log-coefficient past 709: its
    # coefficient is then inf, the honest value (readers skip such samples).
    with np.errstate(over="ignore"):
        for i, t in enumerate(law.terms):
            out[t.coef] = float(np.exp(theta[2 * i]))
            out[t.exponent] = float(theta[2 * i + 1])
        if law.constant:
            out[law.constant] = float(np.exp(theta[-1]))
    return out




def start_grid(law: Law) -> np.ndarray:
    """Hoffmann et al.'s grid of starting points: exponents {0, .5, .., 2}, log-coefficients
    {0, 5, .., 25}, log E {-1, -.5, .., 1}. Rows are thetas."""
    exps = np.arange(0.0, 2.01, 0.5)
    coefs = np.arange(0.0, 25.01, 5.0)
    consts = np.arange(-1.0, 1.01, 0.5)
    axes = [ax for _ in law.terms for ax in (coefs, exps)] + ([consts] if law.constant else [])
    return np.asarray(list(product(*axes)), dtype=float)
