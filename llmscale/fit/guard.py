"""Predictions with their guardrails, pure: a law, an interval, how far it extrapolates, a verdict.

A prediction is only as good as the law behind it. Each one here states its law and interval,
its ratio to the largest fitted N, D and C, and a warning for each reason not to trust it:

- the prediction or its interval falls below a known floor (the synthetic source's entropy);
- the query lies more than `extrapolation_limit` times beyond the data in N, D or C;
- and every reason not to trust the law itself (`law_warnings`, computed once by the fitter and
  stored in fit.json): the law predicted its held-out runs badly (mean error above
  `HELDOUT_LIMIT`) or was not scored on any; an exponent's interval reaches 0, a power term's value at the centre of
  the data (or E) spans more than `COEF_DECADES` decades, or a parameter is pressed against the optimiser's bound; an estimate
  lies outside its own bootstrap interval; more than `MAX_BAD_SHARE` of the resamples failed or
  ended at a bound; E's whole interval lies below the source's floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llmscale.fit.frontier import allocate, allocation_interval
from llmscale.fit.laws import LAWS, law_inputs, predict, predict_cost
from llmscale.fit.result import FitResult, LawFit

HELDOUT_LIMIT = 0.05  # mean |relative error| on the held-out runs
COEF_DECADES = 2.0  # a term (at the data's centre) or E wider than this (hi / lo > 100) is unconstrained
EXTRAPOLATION_LIMIT = 100.0  # default: warn beyond 100x the largest fitted N, D or C
# Resamples that failed (too few distinct N, D or points) or ended at a bound: above this
# share, the intervals describe only the well-behaved rest, and the law is not reliable.
MAX_BAD_SHARE = 0.10
OUTSIDE_TOL = 1e-3  # relative: an estimate this close to its interval's end is inside it


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
    """What makes a law itself untrustworthy, independent of the query: the fitter's own
    verdict, stored in fit.json (`LawFit.warnings`). The first "unconstrained" one names the
    `llmscale plan` command that designs a sweep to pin the law (issue 22), for every reader:
    `fit`, `predict` and the report."""
    out = list(entry.warnings)
    loose = [i for i, w in enumerate(out) if "unconstrained" in w]
    if loose:
        from llmscale.design import plan_command  # lazily: the planner stands right of fit/

        cmd = plan_command(fit)
        if cmd:
            out[loose[0]] += f"; `{cmd}` designs a sweep that pins it"
    return out


def _name(law: str, p: str) -> str:
    kind = "exponent" if p in ("alpha", "beta", "gamma") else "coefficient"
    return f"the {law} law's {kind} {p}"


def _term_interval(entry: LawFit, t) -> tuple[float, float] | None:
    """The bootstrap interval of a power term's value at the centre of the fitted inputs.

    Why not the coefficient's own interval: A is the term at N = 1, four or more decades below
    any run, so its interval is the exponent's uncertainty magnified by that distance (A and
    alpha trade off along the data); a law whose term is pinned to a few percent where the runs
    are can still have A spanning several decades. Without a centre (a fit.json from before it
    was recorded) the coefficient's own interval is judged."""
    at = entry.centre.get(t.input)
    if at is None:
        return entry.intervals.get(t.coef)
    samples = entry.finite_samples
    if len(samples) < 2:
        return None
    with np.errstate(all="ignore"):
        v = np.array([s[t.coef] * at ** -s[t.exponent] for s in samples])
    return _percentiles(v, entry.ci_level)


def assess_law(entry: LawFit, floor: float | None) -> tuple[str, ...]:
    """Every reason not to trust `entry` itself; `floor` is the source's exact entropy in the
    fitted loss's units (None when unknown). The fitter calls this once per law."""
    out = []
    law, iv, p = entry.law, entry.intervals, entry.params
    h = entry.heldout
    if h.mean_abs_rel_err is not None and h.mean_abs_rel_err > HELDOUT_LIMIT:
        out.append(f"the {law} law predicted its held-out runs with a mean error of "
                   f"{100 * h.mean_abs_rel_err:.1f}% (limit {100 * HELDOUT_LIMIT:.0f}%)")
    elif h.mean_abs_rel_err is None:  # nothing says it extrapolates: not vouched for
        out.append(f"the {law} law was not scored on held-out runs ({h.reason}): its "
                   "predictions beyond the data are untested")
    if law in LAWS:
        spec = LAWS[law]
        level = f"{100 * entry.ci_level:.0f}%"
        for t in spec.terms:
            lo_hi = iv.get(t.exponent)
            if lo_hi and lo_hi[0] <= 0:
                out.append(f"{_name(law, t.exponent)} is unconstrained: its interval "
                           f"[{lo_hi[0]:.3g}, {lo_hi[1]:.3g}] reaches 0")
        for t in spec.terms:
            lo_hi = _term_interval(entry, t)
            if lo_hi and (lo_hi[0] <= 0 or lo_hi[1] / lo_hi[0] > 10 ** COEF_DECADES):
                at = entry.centre[t.input]
                out.append(f"{_name(law, t.coef)} is unconstrained: its term "
                           f"{t.coef}·{t.input}^-{t.exponent} at the data's centre "
                           f"({t.input} = {at:.3g}) spans [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}], "
                           f"more than {COEF_DECADES:.0f} decades")
        if spec.constant and (lo_hi := iv.get(spec.constant)) and (
                lo_hi[0] <= 0 or lo_hi[1] / lo_hi[0] > 10 ** COEF_DECADES):
            out.append(f"{_name(law, spec.constant)} is unconstrained: its interval "
                       f"[{lo_hi[0]:.3g}, {lo_hi[1]:.3g}] spans more than "
                       f"{COEF_DECADES:.0f} decades")
        # A percentile interval's end lies on a bound once more than its tail share of the
        # resamples ended there: the interval is the bound's, not the data's.
        tail = (1 - entry.ci_level) / 2
        for name in spec.param_names:
            share = entry.bound_share.get(name, 0.0)
            if name in entry.at_bound or share > tail:
                where = ("the fit ended at it" if name in entry.at_bound else "")
                if share > tail:
                    where += (" and " if where else "") + (
                        f"{100 * share:.0f}% of the resamples did")
                out.append(f"{_name(law, name)} is unconstrained: {name} = {p[name]:.3g}"
                           + (f" [{iv[name][0]:.3g}, {iv[name][1]:.3g}]" if name in iv else "")
                           + f" is pressed against the optimiser's bound ({where}; see "
                           "fit.robust: a term the data cannot tell from 0, or an exponent "
                           "at its limit)")
        for name in spec.param_names:
            lo_hi, v = iv.get(name), p.get(name)
            # Outside by more than the optimiser's own precision (an interval of resamples that
            # all hold the same few points can be narrower than that, and is flagged otherwise)
            slack = OUTSIDE_TOL * abs(v) if v is not None else 0.0
            if lo_hi and v is not None and math.isfinite(v) and not (
                    lo_hi[0] - slack <= v <= lo_hi[1] + slack):
                out.append(f"the {law} law is unstable: its {name} = {v:.4g} lies outside its own "
                           f"{level} bootstrap interval [{lo_hi[0]:.4g}, {lo_hi[1]:.4g}] "
                           "(its resamples centre elsewhere: the fit does not hold up under "
                           "resampling)")
        if spec.constant and floor is not None:
            e, lo_hi = p[spec.constant], iv.get(spec.constant)
            top = lo_hi[1] if lo_hi else e
            if top < floor:
                out.append(f"the {law} law's {spec.constant} = {e:.4g}"
                           + (f" [{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi else "")
                           + f" lies wholly below the floor {floor:.4g} (the source's exact "
                           "entropy): its predictions cross the floor once they reach far "
                           "enough")
    if entry.resamples:
        bad = entry.failed_resamples + entry.bound_resamples
        if bad > MAX_BAD_SHARE * entry.resamples:
            out.append(f"{100 * bad / entry.resamples:.0f}% of the {law} law's "
                       f"{entry.resamples} bootstrap resamples failed "
                       f"({entry.failed_resamples}: too few distinct points to fit) or ended at "
                       f"a bound ({entry.bound_resamples}) (limit {100 * MAX_BAD_SHARE:.0f}%): "
                       "its intervals describe only the rest")
    return tuple(out)


def _interval(entry: LawFit, **inputs) -> tuple[float, float] | None:
    samples = entry.finite_samples
    if len(samples) < 2:
        return None
    with np.errstate(all="ignore"):
        preds = np.array([float(predict(entry.law, s, **inputs)) for s in samples])
    return _percentiles(preds, entry.ci_level)


def _percentiles(v: np.ndarray, ci_level: float) -> tuple[float, float] | None:
    """The central ci_level interval of the finite values (None with fewer than 2)."""
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None
    q = 100 * (1 - ci_level) / 2
    lo, hi = np.percentile(v, [q, 100 - q])
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
