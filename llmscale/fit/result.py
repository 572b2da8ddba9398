"""The typed fit result: what `llmscale fit` writes to fit.json and what plots, report and
predict read. One contract, frozen dataclasses, `to_json` / `from_json`.

Everything a reader needs is here, already computed by the fitter (which runs are held out,
which runs each law was fitted to, the IsoFLOP budgets and their runs, the frontier): a reader
never regroups, refits or recomputes. Intervals are (lo, hi) at `ci_level`; bootstrap samples
(at most `MAX_SAMPLES` per law) let readers draw bands and interval predictions.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

SCHEMA = 3  # fit.json schema version; from_json refuses others (3: law warnings, bounds)
MAX_SAMPLES = 200  # bootstrap samples kept per law in fit.json

Interval = tuple[float, float]


@dataclass(frozen=True)
class Point:
    """One fitted point: a shape's best run (or the mean of its runs, reduce=mean)."""

    run_id: str
    N: float
    D: float | None
    C: float | None
    loss: float
    flops_per_token: float | None = None  # the run's own training FLOPs per token


@dataclass(frozen=True)
class Skipped:
    run_id: str
    status: str
    reason: str


@dataclass(frozen=True)
class Residual:
    run_id: str
    observed: float
    predicted: float
    log_residual: float | None  # log(observed / predicted); None when predicted <= 0


@dataclass(frozen=True)
class Heldout:
    """How the law, fitted without the held-out runs, predicts them (the same runs for every
    law of one fit). `reason` instead of errors when there was no split."""

    run_ids: tuple[str, ...] = ()
    errors: tuple[float, ...] = ()  # |predicted - observed| / observed, per run_id
    n_fit: int = 0
    mean_abs_rel_err: float | None = None
    max_abs_rel_err: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class LawFit:
    law: str  # linear | power | saturating | chinchilla | compute
    inputs: tuple[str, ...]  # N, D, C
    params: dict[str, float]
    intervals: dict[str, Interval]  # bootstrap percentile intervals, empty without bootstrap
    ci_level: float
    samples: tuple[dict[str, float], ...]  # bootstrap samples (at most MAX_SAMPLES)
    resamples: int  # bootstrap resamples drawn
    method: str
    objective: float
    describes: str  # what the law is a law of, in words (e.g. "loss at the largest D")
    fitted_run_ids: tuple[str, ...]  # the runs it was fitted to (after selection)
    heldout: Heldout
    residuals: tuple[Residual, ...]
    notes: tuple[str, ...] = ()
    # The optimiser's bounds (fit.robust.theta_bounds): parameters of the point fit at a bound,
    # and per parameter the share of the fitted resamples that ended with it at a bound.
    at_bound: tuple[str, ...] = ()
    bound_share: dict[str, float] = field(default_factory=dict)
    # Resamples that could not be fitted (too few distinct N, D or points after the selection),
    # and resamples with any parameter at a bound; both out of `resamples`.
    failed_resamples: int = 0
    bound_resamples: int = 0
    # Every reason not to trust the law itself, independent of a query (fit.guard.law_warnings),
    # computed once by the fitter; the report says "not reliable" and predict warns with them.
    warnings: tuple[str, ...] = ()
    # The geometric mean of each input over the fitted points: where a power term's size is
    # judged (a coefficient alone is the term at N = 1, decades away from any run).
    centre: dict[str, float] = field(default_factory=dict)

    @property
    def reliable(self) -> bool:
        return not self.warnings

    @property
    def finite_samples(self) -> tuple[dict[str, float], ...]:
        """The bootstrap samples whose every parameter is a finite number. A resample can run a
        coefficient to overflow (an unconstrained law); the interval counted it, but it cannot
        be evaluated (fit.json stores it as null)."""
        return tuple(s for s in self.samples
                     if all(v is not None and math.isfinite(v) for v in s.values()))


@dataclass(frozen=True)
class Allocation:
    """Compute-optimal N_opt(C) = G (C/q)^a, D_opt(C) = C / (q N_opt^r) from the Chinchilla fit,
    with each run's FLOPs per token modelled as q N^r (r = 1, q = 6 is the textbook 6N)."""

    a: float
    b: float
    G: float
    q: float
    r: float
    samples: tuple[dict[str, float], ...] = ()  # (a, b, G) per bootstrap sample
    intervals: dict[str, Interval] = field(default_factory=dict)  # a, b


@dataclass(frozen=True)
class IsoBudget:
    C: float
    N_opt: float
    D_opt: float
    loss_min: float
    parabola: tuple[float, float, float]  # loss = p0 x^2 + p1 x + p2, x = log10 N
    run_ids: tuple[str, ...]
    inside: bool = True  # the minimum lies within the budget's sizes (not extrapolated)


@dataclass(frozen=True)
class Isoflop:
    budgets: tuple[IsoBudget, ...]  # the budgets whose parabola has a minimum
    a: float | None = None  # N_opt ∝ C^a over the budgets; None unless `why_not` is ""
    b: float | None = None  # D_opt ∝ C^b
    k_N: float | None = None
    k_D: float | None = None
    why_not: str = ""  # why no exponent is stated (a budget without a minimum inside its sizes)


@dataclass(frozen=True)
class ComputeOptimal:
    chinchilla: Allocation | None = None
    isoflop: Isoflop | None = None


@dataclass(frozen=True)
class CostFit:
    column: str  # results.csv column (wall_time_s, gpu_hours, ...)
    x: str  # N*D or N
    params: dict[str, float]  # y = k x^p
    intervals: dict[str, Interval]
    ci_level: float
    n: int
    method: str


@dataclass(frozen=True)
class Floor:
    """The synthetic source's exact entropy rate: the lowest loss any model can reach."""

    entropy_bpb: float
    entropy_nats_per_token: float
    # A source whose scaling law is known (data.source facts): the exponents its mechanism
    # predicts, {"alpha": a - 1, "beta": (a - 1) / a}, set beside the fitted ones. Empty else.
    theory: dict[str, float] = field(default_factory=dict)

    def in_units(self, loss_column: str) -> float:
        """The floor in a loss column's units (bits/byte for val_bpb, else nats/token)."""
        return self.entropy_bpb if loss_column == "val_bpb" else self.entropy_nats_per_token


@dataclass(frozen=True)
class Extent:
    """The largest N, D, C among the fitted points (extrapolation is measured against them)."""

    N: float | None
    D: float | None
    C: float | None


@dataclass(frozen=True)
class Crossing:
    """Where two kinds' curves of one law cross (groups only)."""

    law: str
    kinds: tuple[str, str]
    input: str  # N or C
    at: float | None  # None: no crossing in the searched range
    interval: Interval | None
    fraction: float  # share of bootstrap sample pairs that cross in the range


@dataclass(frozen=True)
class FitResult:
    source: str
    n_column: str
    loss_column: str
    reduce: str
    points: tuple[Point, ...]
    skipped: tuple[Skipped, ...]
    laws: dict[str, LawFit]
    not_fitted: dict[str, str]
    heldout_run_ids: tuple[str, ...]  # the one held-out set every law is scored on
    heldout_rule: str
    ranking: tuple[str, ...]  # laws by held-out error on those runs, best first
    frontier_run_ids: tuple[str, ...]  # lowest loss at or below each compute (approach 1)
    compute_optimal: ComputeOptimal
    cost: dict[str, CostFit]
    floor: Floor | None
    extent: Extent
    notes: tuple[str, ...] = ()
    model_kind: str | None = None  # the kind this fit covers (groups), None: all runs
    groups: dict[str, FitResult] = field(default_factory=dict)  # one fit per model kind
    crossings: tuple[Crossing, ...] = ()
    all_runs: bool = False  # runs no longer in the sweep's plan were included (--all-runs)
    schema: int = SCHEMA

    def law(self, name: str) -> LawFit | None:
        return self.laws.get(name)

    def floor_in_loss_units(self) -> float | None:
        """The floor in the fitted loss's units (bits/byte for val_bpb, else nats/token)."""
        return None if self.floor is None else self.floor.in_units(self.loss_column)

    def to_json(self) -> str:
        return json.dumps(_encode(self), indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FitResult:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else None
            raise ValueError(f"fit.json schema {found!r}, this llmscale reads schema {SCHEMA}; "
                             "rerun `llmscale fit`")
        return _decode(cls, data)


# ----------------------------------------------------------------------------- codec


def _encode(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return {f.name: _encode(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, dict):
        return {str(k): _encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()  # numpy scalars
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no inf/nan; a non-finite number reads back as "unknown"
    return v


_HINTS: dict[type, dict[str, Any]] = {}


def _decode(tp: Any, v: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if v is None else _decode(args[0], v)
    if v is None:
        return None
    if is_dataclass(tp):
        hints = _HINTS.get(tp)
        if hints is None:
            hints = _HINTS[tp] = typing.get_type_hints(tp)
        known = {f.name for f in fields(tp)}
        return tp(**{k: _decode(hints[k], x) for k, x in v.items() if k in known})
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], x) for x in v)
        return tuple(_decode(a, x) for a, x in zip(args, v, strict=True))
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {k: _decode(vt, x) for k, x in v.items()}
    if tp is float:
        return float(v)
    return v
