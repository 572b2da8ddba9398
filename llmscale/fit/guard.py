"""Predictions with their guardrails, pure: a law, an interval, how far it extrapolates, a verdict.

A prediction is only as good as the law behind it. Each one here states its law and interval,
its ratio to the largest fitted N, D and C, and a warning for each reason not to trust it:

- the prediction or its interval falls below a known floor (the synthetic source's entropy);
- the law predicted the held-out runs badly (mean error above `HELDOUT_LIMIT`);
- an exponent's interval reaches 0, or a coefficient's spans more than `COEF_DECADES` decades;
- the query lies more than `extrapolation_limit` times beyond the data in N, D or C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llmscale.fit.frontier import allocate, allocation_interval
from llmscale.fit.laws import LAWS, law_inputs, predict, predict_cost
from llmscale.fit.result import FitResult, LawFit

HELDOUT_LIMIT = 0.05  # mean |relative error| on the held-out runs
COEF_DECADES = 2.0  # a coefficient interval wider than this (hi / lo > 100) is unconstrained
EXTRAPOLATION_LIMIT = 100.0  # default: warn beyond 100x the largest fitted N, D or C


@dataclass(frozen=True)
class Prediction:
    law: str
    inputs: dict[str, float]  # N, D, C of the query (what the law reads, and C when known)
    loss: float
    interval: tuple[float, float] | None
    extrapolation: dict[str, float]  # query / largest fitted value, per input
    warnings: tuple[str, ...]
    N_opt_interval: tuple[float, float] | None = None  # budget plans only
    D_opt_interval: tuple[float, float] | None = None
    wall_time_s: float | None = None
    checkpoint_bytes: float | None = None

    @property
    def reliable(self) -> bool:
        return not self.warnings

    @property
    def verdict(self) -> str:
        return "reliable" if self.reliable else "not reliable: " + "; ".join(self.warnings)


def law_warnings(fit: FitResult, entry: LawFit) -> list[str]:
    """What makes a law itself untrustworthy, independent of the query."""
    out = []
    h = entry.heldout
    if h.mean_abs_rel_err is not None and h.mean_abs_rel_err > HELDOUT_LIMIT:
        out.append(f"the {entry.law} law predicted its held-out runs with a mean error of "
                   f"{100 * h.mean_abs_rel_err:.1f}% (limit {100 * HELDOUT_LIMIT:.0f}%)")
    if entry.law in LAWS:
        spec = LAWS[entry.law]
        for t in spec.terms:
            lo_hi = entry.intervals.get(t.exponent)
            if lo_hi and lo_hi[0] <= 0:
                out.append(f"the {entry.law} law's exponent {t.exponent} is unconstrained: its "
                           f"interval [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}] reaches 0")
        for name in [t.coef for t in spec.terms] + ([spec.constant] if spec.constant else []):
            lo_hi = entry.intervals.get(name)
            if lo_hi and (lo_hi[0] <= 0 or lo_hi[1] / lo_hi[0] > 10 ** COEF_DECADES):
                out.append(f"the {entry.law} law's coefficient {name} is unconstrained: its "
                           f"interval [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}] spans more than "
                           f"{COEF_DECADES:.0f} decades")
    loose = [i for i, w in enumerate(out) if "unconstrained" in w]
    if loose:  # name the command that designs a sweep to pin it, once per law
        from llmscale.design import plan_command  # lazily: the planner stands right of fit/

        cmd = plan_command(fit)
        if cmd:
            out[loose[0]] += f"; `{cmd}` designs a sweep that pins it"
    return out


def _interval(entry: LawFit, **inputs) -> tuple[float, float] | None:
    samples = entry.finite_samples
    if len(samples) < 2:
        return None
    with np.errstate(all="ignore"):
        preds = np.array([float(predict(entry.law, s, **inputs)) for s in samples])
    preds = preds[np.isfinite(preds)]
    if len(preds) < 2:
        return None
    q = 100 * (1 - entry.ci_level) / 2
    lo, hi = np.percentile(preds, [q, 100 - q])
    return float(lo), float(hi)


def _query_warnings(fit: FitResult, entry: LawFit, loss: float, interval, ratios: dict,
                    limit: float) -> list[str]:
    out = []
    floor = fit.floor_in_loss_units()
    if floor is not None:
        if loss < floor:
            out.append(f"the prediction {loss:.4g} falls below the floor {floor:.4g}, the "
                       "source's exact entropy: no model can get there")
        elif interval and interval[0] < floor:
            out.append(f"its interval reaches {interval[0]:.4g}, below the floor {floor:.4g} "
                       "(the source's exact entropy): the law is not constrained there")
    for k, ratio in ratios.items():
        if ratio > limit:
            out.append(f"the query extrapolates {ratio:.3g}x beyond the largest fitted {k} "
                       f"(limit {limit:.3g}x)")
    return out + law_warnings(fit, entry)


def _ratios(fit: FitResult, **q) -> dict[str, float]:
    ext = {"N": fit.extent.N, "D": fit.extent.D, "C": fit.extent.C}
    return {k: float(v / ext[k]) for k, v in q.items() if v is not None and ext.get(k)}


def predict_loss(fit: FitResult, N: float, D: float | None = None, law: str | None = None,
                 limit: float = EXTRAPOLATION_LIMIT) -> Prediction:
    """Loss at N (and D) by `law`, default the best-ranked law the inputs support. Raises
    ValueError with a message for the user when no law fits the question."""
    have = {"N"} | ({"D"} if D is not None else set())
    if law is None:
        order = list(fit.ranking) + [k for k in fit.laws if k not in fit.ranking]
        usable = [k for k in order if set(law_inputs(k)) <= have and k != "compute"]
        if D is not None and "chinchilla" in usable:
            usable = ["chinchilla"]
        if not usable:
            raise ValueError(f"the fit has no law that predicts from {', '.join(sorted(have))}; "
                             f"it has: {', '.join(fit.laws) or 'none'}")
        law = usable[0]
    if law not in fit.laws:
        raise ValueError(f"law {law!r} is not in the fit; it has: {', '.join(fit.laws) or 'none'}")
    if law == "compute":
        C = None if D is None else _flops(fit, N, D)
        if C is None:
            raise ValueError("the compute law predicts from C = FLOPs per token x D: give "
                             "--params and --tokens, or --budget-flops for the planner")
        inputs = {"C": C}
    elif law == "chinchilla":
        if D is None:
            raise ValueError("the chinchilla law needs D: add --tokens")
        inputs = {"N": N, "D": D}
    else:
        inputs = {"N": N}
    entry = fit.laws[law]
    loss = float(predict(law, entry.params, **inputs))
    interval = _interval(entry, **inputs)
    query = {"N": N, "D": D, "C": _flops(fit, N, D) if D is not None else None}
    ratios = _ratios(fit, **{k: v for k, v in query.items() if k in inputs or k == "C"})
    warnings = _query_warnings(fit, entry, loss, interval, ratios, limit)
    return Prediction(law, {k: v for k, v in query.items() if v is not None}, loss, interval,
                      ratios, tuple(warnings))


def _flops(fit: FitResult, N: float, D: float) -> float:
    """C of a run of N parameters on D tokens, with the sweep's FLOPs per token (q N^r)."""
    co = fit.compute_optimal.chinchilla
    q, r = (co.q, co.r) if co else (6.0, 1.0)
    return q * N ** r * D


def plan_budget(fit: FitResult, flops: float | None = None, gpu_hours: float | None = None,
                limit: float = EXTRAPOLATION_LIMIT) -> Prediction:
    """The compute-optimal N, D at a FLOP (or GPU-hour) budget with the predicted loss, wall time
    and checkpoint size, and the bootstrap intervals of N_opt and D_opt."""
    co = fit.compute_optimal.chinchilla
    entry = fit.laws.get("chinchilla")
    if co is None or entry is None:
        raise ValueError("the fit has no chinchilla law with positive exponents, so no "
                         "compute-optimal allocation; fit runs that vary both size and tokens")
    if gpu_hours is not None:
        cost = fit.cost.get("gpu_hours")
        if cost is None:
            raise ValueError("the fit has no gpu_hours cost law (no run recorded GPU time); "
                             "use --budget-flops")
        k, p = cost.params["k"], cost.params["p"]
        # gpu_hours = k (N D)^p; along the optimum N D = C / (q N^(r-1)) ~ C / q for r ~ 1
        flops = co.q * (gpu_hours / k) ** (1 / p)
    assert flops is not None and math.isfinite(flops)
    N, D = (float(v) for v in allocate(co, flops))
    inputs = {"N": N, "D": D}
    loss = float(predict("chinchilla", entry.params, **inputs))
    interval = _interval(entry, **inputs)
    ratios = _ratios(fit, N=N, D=D, C=flops)
    warnings = _query_warnings(fit, entry, loss, interval, ratios, limit)
    nd = allocation_interval(co, flops, entry.ci_level)
    wall = fit.cost.get("wall_time_s")
    ckpt = fit.cost.get("checkpoint_bytes")
    return Prediction(
        "chinchilla", {"N": N, "D": D, "C": float(flops)}, loss, interval, ratios,
        tuple(warnings), N_opt_interval=nd[0] if nd else None,
        D_opt_interval=nd[1] if nd else None,
        wall_time_s=float(predict_cost(wall.params, N * D)) if wall else None,
        checkpoint_bytes=float(predict_cost(ckpt.params, N)) if ckpt else None)
