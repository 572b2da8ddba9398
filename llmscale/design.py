"""Experiment design, behind `llmscale plan`: which sweep pins a scaling law for a given budget.

A sweep's design decides what its fit can say: which FLOP budgets, which sizes at each, a
fixed-D row or none, how many seeds. This module compares candidate designs *before* any of
them is trained, by simulation:

1. a prior law L(N, D) = E + A N^-alpha + B D^-beta (`Prior`): a pilot sweep's chinchilla fit
   with its bootstrap samples and residual noise, or a law shipped with the package
   (`llmscale/priors/*.json`), plus a base run config that turns sizes into
   `model.hidden_dim` through llmscale.accounting;
2. candidate designs (`CANDIDATES`), each scaled to spend the whole budget: IsoFLOP budgets
   whose sizes bracket the optimum the prior predicts at each budget (`size_design`);
3. for each design, `sims` simulated sweeps: a law drawn from the prior's samples, each run's
   loss drawn from it with the prior's log-normal noise, then fitted with the real fitter
   (`llmscale.fit.pipeline.fit_runs`: reduction, held-out split and bootstrap as
   `llmscale fit` does) and read with the real predictors (`llmscale.fit.guard`), so each
   simulated sweep yields the intervals `llmscale fit` / `predict` would print;
4. the expected 95% interval width of the target and of alpha, beta and E is the median over
   the simulated sweeps of each one's bootstrap interval width, read from its few resamples
   without their small-sample bias (`sweep_intervals`; measured: README, "Planning a sweep").

Pure over fit/, the estimator (llmscale.sweep.estimate) and config, except the section that
reads priors from disk (`load_prior`); imports no CLI. The simulated fits run in worker
processes, each with BLAS on one thread as every `fit_runs` runs it (`fit.robust.serial_blas`):
L-BFGS-B on a 5-parameter law calls BLAS on tiny arrays, and OpenBLAS's threads then cost far
more than the arithmetic.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmscale.accounting import RunAccounting, flops_per_token, param_counts, tokens_for_flops
from llmscale.config import RunConfig, from_dict, with_overrides
from llmscale.errors import UserError
from llmscale.fit.frontier import allocate, chinchilla_optimal, flops_model
from llmscale.fit.laws import law_param_names, predict
from llmscale.fit.result import FitResult

if TYPE_CHECKING:  # imported where used: llmscale.sweep loads its executors
    from llmscale.records import RunRecord
    from llmscale.sweep.estimate import Rate, Slots

LAW = "chinchilla"  # the one law a design is planned for: L(N, D) needs both axes varied
PARAMS = tuple(law_param_names(LAW))  # A, alpha, B, beta, E
PRIOR_FORMAT = 1  # version of the prior JSON (`Prior.to_json`)
PRIORS_DIR = "priors"  # package data: llmscale/priors/<name>.json
CI_LEVEL = 0.95

# Per simulated sweep, the bootstrap resamples of its fit. `llmscale fit` draws 200; the planner
# draws 20 and reads each sweep's interval through `sweep_intervals`, whose widths were
# measured against the 200-resample intervals of independent sweeps (scripts/plan_check.py,
# README "Planning a sweep"; tests/test_design.py checks it): 0.77-1.23x of them on two designs
# under the chinchilla prior. 10 resamples cost ~12% less CPU per sweep (the point and
# held-out fits dominate) but miss a skewed tail (E's width 0.63x on the known law of
# tests/test_design.py).
SIM_BOOTSTRAP = 20
SIMS = 50


# ============================================================================ the prior


@dataclass(frozen=True)
class Prior:
    """What a plan assumes: a chinchilla law, its uncertainty, its noise, and a base run.

    `samples` are draws of the law's parameters (a fit's bootstrap samples); a simulated sweep
    draws its true law from them, or takes `params` when there are none. `noise` is the
    standard deviation of log(observed / predicted loss) of one run, from the residuals of the
    fit the prior came from. `base` sizes the runs (vocab, layers, seq_len, batch, data): its
    sweep section is replaced by the planned one; its `sweep.derived` keys are kept.
    `records` are the pilot's completed runs (the measured device rate), empty for a shipped
    prior."""

    name: str
    params: dict[str, float]
    samples: tuple[dict[str, float], ...]
    noise: float  # std of log-loss residuals of one run
    base: RunConfig
    description: str = ""
    provenance: str = ""
    records: tuple[RunRecord, ...] = ()  # the pilot's completed runs: the measured rate
    # the smallest and largest N and D of the runs the law was fitted on (None: not known);
    # a design reaching beyond them extrapolates the law, and the plan says so
    extent: dict[str, tuple[float, float]] | None = None

    def to_json(self) -> str:
        """The prior file format (`llmscale/priors/README.md`); `prior_from_json` reads it."""
        def rounded(p: dict[str, float]) -> dict[str, float]:
            return {k: float(f"{p[k]:.7g}") for k in PARAMS}

        doc = {"format": PRIOR_FORMAT, "name": self.name, "description": self.description,
               "provenance": self.provenance, "law": LAW, "params": rounded(self.params),
               "noise": float(f"{self.noise:.6g}"), "base_config": _non_default(self.base)}
        if self.extent:
            doc["extent"] = {k: [float(f"{v:.4g}") for v in lo_hi]
                             for k, lo_hi in self.extent.items()}
        # one sample per line: a prior stays readable with 200 of them
        samples = ",\n  ".join(json.dumps(rounded(s)) for s in self.samples)
        head = json.dumps(doc, indent=1)[:-2]
        return f'{head},\n "samples": [\n  {samples}\n ]\n}}\n'


PRIOR_KEYS = {"format", "name", "description", "provenance", "law", "params", "noise",
              "base_config", "samples", "extent"}


def prior_from_json(text: str, where: str) -> Prior:
    """Read a prior file; every mistake is a UserError naming `where` and the key."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not a prior file (invalid JSON: {e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{where}: not a prior file (expected a JSON object)")
    unknown = sorted(set(doc) - PRIOR_KEYS)
    missing = sorted({"format", "law", "params", "noise", "base_config"} - set(doc))
    if unknown or missing:
        raise UserError(f"{where}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) +
            ([f"missing key(s) {', '.join(missing)}"] if missing else [])) +
            f" (a prior has: {', '.join(sorted(PRIOR_KEYS))})")
    if doc["format"] != PRIOR_FORMAT:
        raise UserError(f"{where}: format {doc['format']!r}; this llmscale reads format "
                        f"{PRIOR_FORMAT}")
    if doc["law"] != LAW:
        raise UserError(f"{where}: law {doc['law']!r}; a plan needs a {LAW} law L(N, D)")
    params = _law_params(doc["params"], f"{where}: params")
    samples = tuple(_law_params(s, f"{where}: samples[{i}]")
                    for i, s in enumerate(doc.get("samples") or []))
    noise = doc["noise"]
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise UserError(f"{where}: noise {noise!r}; expected the std of log-loss residuals, a "
                        "number >= 0")
    if not isinstance(doc["base_config"], dict):
        raise UserError(f"{where}: base_config must be a config mapping (sections as in a YAML "
                        "config)")
    try:
        base = from_dict(doc["base_config"])
    except UserError as e:
        raise UserError(f"{where}: base_config: {e}") from None
    return Prior(name=str(doc.get("name") or where), params=params, samples=samples,
                 noise=float(noise), base=base, description=str(doc.get("description", "")),
                 provenance=str(doc.get("provenance", "")),
                 extent=_extent(doc.get("extent"), f"{where}: extent"))


def _extent(v: Any, where: str) -> dict[str, tuple[float, float]] | None:
    if v is None:
        return None
    ok = (isinstance(v, dict) and set(v) == {"N", "D"} and all(
        isinstance(x, list) and len(x) == 2 and all(isinstance(y, (int, float)) and y > 0
                                                    for y in x) and x[0] <= x[1]
        for x in v.values()))
    if not ok:
        raise UserError(f"{where}: expected {{\"N\": [min, max], \"D\": [min, max]}} of the "
                        "fitted runs, positive numbers")
    return {k: (float(v[k][0]), float(v[k][1])) for k in ("N", "D")}


def _law_params(p: Any, where: str) -> dict[str, float]:
    if not isinstance(p, dict) or set(p) != set(PARAMS):
        raise UserError(f"{where}: expected exactly the {LAW} parameters {', '.join(PARAMS)}")
    out = {}
    for k in PARAMS:
        v = p[k]
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise UserError(f"{where}: {k} = {v!r} is not a finite number")
        out[k] = float(v)
    if not all(out[k] > 0 for k in PARAMS):
        bad = [k for k in PARAMS if out[k] <= 0]
        raise UserError(f"{where}: {', '.join(bad)} must be > 0 (a law whose loss does not fall "
                        "with N and D has no compute-optimal size to plan around)")
    return out


def residual_noise(fit: FitResult) -> float:
    """Std of one run's log-loss residual around the chinchilla fit: sqrt(sum r^2 / (n - p)),
    the residuals' own degrees of freedom (p = 5 fitted parameters)."""
    entry = fit.laws[LAW]
    r = np.array([x.log_residual for x in entry.residuals if x.log_residual is not None])
    dof = len(r) - len(PARAMS)
    if dof < 1:
        raise UserError(f"the {LAW} fit has {len(r)} residuals: too few to estimate the noise "
                        f"of a run (needs more than {len(PARAMS)})")
    return float(np.sqrt(np.sum(r * r) / dof))


def prior_from_fit(fit: FitResult, base: RunConfig, *, name: str, records=(),
                   description: str = "", provenance: str = "") -> Prior:
    """A pilot's chinchilla fit as a prior: its parameters, bootstrap samples and noise."""
    entry = _law_of(fit, name)
    bad = [k for k in PARAMS if not entry.params[k] > 0]
    if bad:
        raise UserError(f"{name}: the {LAW} fit has {', '.join(f'{k} = {entry.params[k]:.3g}' for k in bad)}"
                        "; a plan needs positive parameters (loss falling with N and D)")
    samples = tuple(s for s in entry.finite_samples if all(s[k] > 0 for k in PARAMS))
    fitted = [pt for pt in fit.points if pt.run_id in set(entry.fitted_run_ids) and pt.D]
    extent = ({"N": (min(pt.N for pt in fitted), max(pt.N for pt in fitted)),
               "D": (min(pt.D for pt in fitted), max(pt.D for pt in fitted))}
              if fitted else None)
    return Prior(name=name, params={k: float(entry.params[k]) for k in PARAMS}, samples=samples,
                 noise=residual_noise(fit), base=_without_sweep(base), description=description,
                 provenance=provenance, records=tuple(records), extent=extent)


def _law_of(fit: FitResult, name: str):
    """The fit's chinchilla law, or a UserError saying why there is none."""
    entry = fit.laws.get(LAW)
    if entry is None:
        why = fit.not_fitted.get(LAW, "not requested")
        raise UserError(f"{name}: the fit has no {LAW} law ({why}); a plan needs L(N, D): fit "
                        "a pilot that varies both size and tokens")
    return entry


def _without_sweep(cfg: RunConfig) -> RunConfig:
    """The base run: the sweep section emptied except `derived` (a size rule such as
    embedding_dim = hidden_dim belongs to the base run) and where/how it runs."""
    sw = cfg.sweep
    return replace(cfg, sweep=replace(sw, grid={}, zip={}, runs=[], seeds=[], budgets=[]))


def _non_default(cfg: RunConfig) -> dict[str, Any]:
    """The config's keys that differ from the defaults (what a YAML config would say)."""
    def diff(mine: Any, default: Any) -> Any:
        if isinstance(mine, dict) and isinstance(default, dict):
            out = {k: diff(v, default.get(k)) for k, v in mine.items() if v != default.get(k)}
            return {k: v for k, v in out.items() if v != {}}
        return mine

    return json.loads(json.dumps(diff(cfg.to_dict(), RunConfig().to_dict())))


CHINCHILLA_BASE = {
    # Where the shipped `chinchilla` prior sizes runs: llmscale's GPU-scale IsoFLOP config
    # (configs/wikitext103_isoflop.yaml, the LSTM on WikiText-103) without its sweep. The law is
    # Chinchilla's (transformers on MassiveText); planning with it assumes this model scales the
    # same way, an assumption to replace with a pilot's fit.
    "name": "chinchilla-plan",
    "data": {"source": "hf", "path": "wikitext", "name": "wikitext-103-raw-v1",
             "text_field": "text"},
    "tokenizer": {"kind": "bpe", "vocab_size": 16384},
    "model": {"embedding_dim": 512, "hidden_dim": 512, "num_layers": 2},
    "train": {"batch_size": 64, "seq_len": 128, "lr": 2.0e-3},
    "eval": {"tokens": 2_000_000},
    "sweep": {"derived": {"model.embedding_dim": "model.hidden_dim"}, "slurm": {"time_min": 360}},
    "output": {"dir": "runs/plan"},
}


def chinchilla_prior(resamples: int = 200, seed: int = 0) -> Prior:
    """The shipped `chinchilla` prior, computed: the real fitter on the 240 published runs
    that Besiroglu et al. refitted (llmscale/fit/data), `resamples` bootstrap samples as its
    uncertainty, its residuals as the noise (scripts/make_prior.py writes it)."""
    from llmscale.fit.pipeline import Runs, fit_runs
    from llmscale.fit.reference import REFERENCE_FILE, chinchilla_runs

    r = chinchilla_runs()
    n = len(r["N"])
    runs = Runs(tuple(f"chinchilla{i}" for i in range(n)), r["N"], r["D"], r["C"], r["loss"],
                6 * r["N"], tuple((i,) for i in range(n)))
    fit = fit_runs(runs, laws=(LAW,), bootstrap=resamples, seed=seed, ci_level=CI_LEVEL)
    return prior_from_fit(
        fit, from_dict(CHINCHILLA_BASE), name="chinchilla",
        description=("Chinchilla's law (Hoffmann et al. 2022, approach 3) as Besiroglu et al. "
                     "(2024) refitted it, applied to the WikiText-103 LSTM of "
                     "configs/wikitext103_isoflop.yaml: an assumption for planning before a "
                     "pilot exists"),
        provenance=(f"llmscale.fit.pipeline.fit_runs on the {n} lowest-loss runs of "
                    f"llmscale/fit/data/{REFERENCE_FILE}, D = C / (6 N); {resamples} bootstrap "
                    f"resamples (seed {seed}) as samples; noise = sqrt(sum r^2 / (n - 5)) of "
                    "its log-residuals"))


# ---------------------------------------------------------------------------- loading priors


def named_priors() -> list[str]:
    """The priors shipped with the package (`llmscale/priors/<name>.json`)."""
    d = files("llmscale") / PRIORS_DIR
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".json"))


def load_prior(spec: str, config: str | Path | None = None) -> Prior:
    """PRIOR of `llmscale plan`: a shipped prior's name, a pilot's fit.json, or a sweep
    directory (its fit, refitted first when older than results.csv, as `llmscale plot`
    does). `config` replaces the base run config (needed for a fit.json outside a sweep
    directory)."""
    from llmscale.config import load_config

    base = load_config(config) if config is not None else None
    p = Path(spec)
    text = None
    if spec in named_priors() and not p.exists():
        text, where = ((files("llmscale") / PRIORS_DIR / f"{spec}.json")
                       .read_text(encoding="utf-8"), f"prior {spec!r}")
    elif p.is_file() and _is_prior_file(p):
        text, where = p.read_text(encoding="utf-8"), str(p)
    if text is not None:
        prior = prior_from_json(text, where)
        return replace(prior, base=_without_sweep(base)) if base is not None else prior
    if p.is_dir() or p.is_file():
        return _pilot_prior(p, base)
    raise UserError(f"PRIOR {spec!r} does not exist; give a pilot's fit.json, a sweep "
                    f"directory, a prior file, or a named prior ({', '.join(named_priors())})")


def _is_prior_file(p: Path) -> bool:
    """A prior file (the format above), not a fit.json: a JSON object with a base_config."""
    if p.suffix != ".json":
        return False
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # reported by the fit.json reader, which names what it expected
    return isinstance(doc, dict) and "base_config" in doc


def _pilot_prior(p: Path, base: RunConfig | None) -> Prior:
    from llmscale import layout
    from llmscale.analysis import load_sweep, read_fit
    from llmscale.records import read_results
    from llmscale.sweep.state import load_sweep_config

    sweep_dir = p if p.is_dir() else p.parent
    records: list = []
    if p.is_dir() and layout.results_path(p).is_file():
        data = load_sweep(p)  # refits a stale fit.json, as plot and report do
        if data.fit is None:
            raise UserError(f"{p}: {data.fit_note or 'no fit'}")
        fit, records = data.fit, data.records
    else:
        if p.is_file() and p.suffix != ".json":
            raise UserError(f"PRIOR {str(p)!r} is not a fit.json (nor a sweep directory or a "
                            f"named prior: {', '.join(named_priors())})")
        fit = read_fit(p)
        if layout.results_path(sweep_dir).is_file():
            records, _ = read_results(layout.results_path(sweep_dir))
    _law_of(fit, str(p))  # before asking for a config: without it nothing can be planned
    if base is None:
        if not (sweep_dir / layout.SWEEP_FILE).is_file():
            raise UserError(f"{p}: no {layout.SWEEP_FILE} beside the fit to size the planned runs "
                            "from; give the pilot's config with --config CONFIG")
        base = load_sweep_config(sweep_dir)
    done = tuple(r for r in records if r.status == "completed")
    return prior_from_fit(fit, base, name=str(p), records=done,
                          description=f"the chinchilla fit of {p}",
                          provenance=f"fitted by llmscale from {fit.source or p}")


# ============================================================================ targets


@dataclass(frozen=True)
class Target:
    """What the sweep must pin: `n_opt` (N_opt at compute C), `exponents` (alpha and beta),
    `E` (the irreducible loss) or `loss` (the loss at N, D)."""

    kind: str
    C: float | None = None
    N: float | None = None
    D: float | None = None

    @property
    def label(self) -> str:
        if self.kind == "n_opt":
            return f"n_opt@{self.C:.3g}"
        if self.kind == "loss":
            return f"loss@{self.N:.3g},{self.D:.3g}"
        return self.kind

    @property
    def unit(self) -> str:
        """How its interval width is stated."""
        return {"n_opt": "hi/lo", "exponents": "max of alpha, beta", "E": "nats",
                "loss": "nats"}[self.kind]


TARGETS_HELP = "n_opt@C (e.g. n_opt@1e21), exponents, E, loss@N,D (e.g. loss@1e9,2e10)"


def parse_target(text: str) -> Target:
    """`n_opt@C`, `exponents`, `E` or `loss@N,D`; anything else is a UserError listing them."""
    t = text.strip()
    head, _, arg = t.partition("@")
    try:
        nums = [float(v) for v in arg.split(",")] if arg else []
    except ValueError:
        nums = None
    ok = nums is not None and all(math.isfinite(v) and v > 0 for v in nums)
    if head == "exponents" and not arg:
        return Target("exponents")
    if head == "E" and not arg:
        return Target("E")
    if head == "n_opt" and ok and len(nums) == 1:
        return Target("n_opt", C=nums[0])
    if head == "loss" and ok and len(nums) == 2:
        return Target("loss", N=nums[0], D=nums[1])
    raise UserError(f"--target {text!r}: not a target; allowed: {TARGETS_HELP} "
                    "(numbers positive)")


# ============================================================================ designs


@dataclass(frozen=True)
class DesignSpec:
    """A design's shape, before it is scaled to a budget.

    `budgets` IsoFLOP budgets spread log-evenly over a factor `spread` (largest / smallest);
    at each, `sizes` sizes log-evenly from N_opt / `bracket` to N_opt x `bracket`, N_opt the
    prior's compute-optimal size at that budget; `fixed_d`: one more row of `sizes` sizes (the
    smallest planned N to the largest budget's N_opt) trained on that budget's D_opt tokens;
    every point trained `seeds` times."""

    budgets: int
    spread: float
    sizes: int
    bracket: float
    fixed_d: bool = False
    seeds: int = 1

    @property
    def label(self) -> str:
        row = " +D row" if self.fixed_d else ""
        seeds = f" x{self.seeds} seeds" if self.seeds > 1 else ""
        return (f"{self.budgets} budgets/{self.spread:g}x, {self.sizes} sizes "
                f"N_opt/{self.bracket:g}..x{self.bracket:g}{row}{seeds}")


# One factor at a time around the middle design (4 budgets over 30x, 5 sizes bracketing the
# optimum 4x either way, the shape of Hoffmann et al.'s IsoFLOP profiles): fewer or more
# budgets over a narrower or wider span, wider brackets, a fixed-D row, two seeds.
CANDIDATES: tuple[DesignSpec, ...] = (
    DesignSpec(budgets=4, spread=30, sizes=5, bracket=4),
    DesignSpec(budgets=3, spread=10, sizes=5, bracket=4),
    DesignSpec(budgets=5, spread=100, sizes=5, bracket=4),
    DesignSpec(budgets=4, spread=30, sizes=7, bracket=8),
    DesignSpec(budgets=4, spread=30, sizes=5, bracket=4, fixed_d=True),
    DesignSpec(budgets=4, spread=30, sizes=5, bracket=4, seeds=2),
)


@dataclass(frozen=True)
class PlannedPoint:
    """One run of a design (times its seeds): the width, the FLOP budget it is given
    (`train.flops`) and what the accounting makes of them."""

    hidden_dim: int
    flops: float  # train.flops: the budget; tokens = flops // flops_per_token
    N: float  # params_nonembedding
    D: float  # tokens
    flops_per_token: float
    budget: float | None  # the IsoFLOP budget it belongs to (None: the fixed-D row)
    seeds: tuple[int, ...]

    @property
    def C(self) -> float:
        return self.flops_per_token * self.D


@dataclass(frozen=True)
class Design:
    label: str
    points: tuple[PlannedPoint, ...]
    spec: DesignSpec | None = None  # None: a hand-made design read from a config (--compare)
    config: RunConfig | None = None  # a hand-made design's own config

    @property
    def runs(self) -> int:
        return sum(len(p.seeds) for p in self.points)

    @property
    def flops(self) -> float:
        """Training FLOPs of every run (what --budget-flops limits)."""
        return sum(p.C * len(p.seeds) for p in self.points)

    def arrays(self) -> dict[str, np.ndarray]:
        """The runs as the fitter sees them, one row per run (seeds repeat a point)."""
        rows = [(p.N, p.D, p.C, p.flops_per_token, p.budget or 0.0, i)
                for i, p in enumerate(self.points) for _ in p.seeds]
        a = np.array(rows, dtype=float)
        return {"N": a[:, 0], "D": a[:, 1], "C": a[:, 2], "fpt": a[:, 3], "budget": a[:, 4],
                "point": a[:, 5].astype(int)}


@dataclass(frozen=True)
class SizeTable:
    """The base config's widths and what the accounting makes of them (N and FLOPs per token),
    ordered by N: the inverse of the accounting, without a formula of its own."""

    base: RunConfig
    hidden: np.ndarray
    N: np.ndarray
    fpt: np.ndarray

    def nearest(self, n: float) -> int:
        """Index of the width whose N is nearest `n` in log."""
        i = int(np.searchsorted(self.N, n))
        if i <= 0:
            return 0
        if i >= len(self.N):
            return len(self.N) - 1
        return i if math.log(self.N[i] / n) < math.log(n / self.N[i - 1]) else i - 1


MAX_HIDDEN = 1 << 17


def sized(base: RunConfig, hidden_dim: int) -> RunConfig:
    """The base config at `hidden_dim`, with the base's `sweep.derived` keys applied (e.g.
    embedding_dim = hidden_dim), unvalidated: for the accounting only."""
    cfg = replace(base, model=replace(base.model, hidden_dim=hidden_dim))
    for target, source in base.sweep.derived.items():
        value = _get(cfg, source)
        section, key = target.split(".", 1)
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{key: value})})
    return cfg


def _get(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def size_table(base: RunConfig) -> SizeTable:
    """Every width up to 256, then steps of about 1% up to MAX_HIDDEN (a width 1% off the
    ideal changes N by about 2%, well inside a design's spacing of sizes). A transformer's
    width must split into heads of even width."""
    step = 2 * base.model.num_heads if base.model.kind == "transformer" else 1
    hs, h = [], step
    while h <= MAX_HIDDEN:
        hs.append(h)
        h = max(h + step, int(h * 1.01) // step * step)
    rows = []
    for h in hs:
        cfg = sized(base, h)
        rows.append((h, param_counts(cfg.vocab_size, cfg.model).nonembedding,
                     flops_per_token(cfg.vocab_size, cfg.model, cfg.train.seq_len)))
    a = np.array(rows, dtype=float)
    order = np.argsort(a[:, 1], kind="stable")
    return SizeTable(base, a[order, 0].astype(int), a[order, 1], a[order, 2])


def optimum(table: SizeTable, params: dict[str, float], C: float) -> int:
    """Index of the width the law puts lowest at compute C (each width trained on the tokens C
    buys it): the prior's IsoFLOP minimum, over the base config's own widths."""
    D = C / table.fpt
    with np.errstate(all="ignore"):
        loss = predict(LAW, params, N=table.N, D=D)
    loss = np.where(D >= 1, loss, np.inf)
    return int(np.argmin(loss))


def _budgets(spec: DesignSpec, top: float) -> list[float]:
    """The IsoFLOP budgets, log-even up to `top`, to 4 significant digits (as a YAML shows them:
    the sweep, its sizing and the budget check use the same numbers)."""
    k = spec.budgets
    return [float(f"{top * spec.spread ** ((i - (k - 1)) / (k - 1)) if k > 1 else top:.4g}")
            for i in range(k)]


def _point(table: SizeTable, i: int, flops: float, budget: float | None,
           seeds: tuple[int, ...]) -> PlannedPoint:
    h = int(table.hidden[i])
    cfg = sized(table.base, h)
    tokens = tokens_for_flops(cfg.vocab_size, cfg.model, flops, cfg.train.seq_len)
    return PlannedPoint(h, float(flops), float(table.N[i]), float(tokens), float(table.fpt[i]),
                        budget, seeds)


class TooLarge(Exception):
    """A budget whose optimum lies beyond the widest width the planner sizes (MAX_HIDDEN)."""


def layout_design(spec: DesignSpec, table: SizeTable, params: dict[str, float], top: float
                  ) -> Design | None:
    """The design's runs with its largest budget at `top` FLOPs; None when it is too small to
    fit: a budget whose optimum is the narrowest width, fewer than 3 distinct widths at a
    budget, or a run that gets less than one batch.
    Raises TooLarge when a budget's optimum is the widest width sized."""
    base = table.base
    seeds = tuple(base.train.seed + i for i in range(spec.seeds))
    batch_tokens = base.train.batch_size * base.train.seq_len
    points: list[PlannedPoint] = []
    for C in _budgets(spec, top):
        opt = optimum(table, params, C)
        if opt == len(table.N) - 1:
            raise TooLarge
        if opt == 0:  # the optimum is at or below the narrowest width: nothing to bracket
            return None
        idx = sorted({table.nearest(table.N[opt] * spec.bracket ** t)
                      for t in np.linspace(-1, 1, spec.sizes)})
        if len(idx) < 3:
            return None
        points += [_point(table, i, C, C, seeds) for i in idx]
    if spec.fixed_d:
        top_opt = optimum(table, params, top)
        d_row = math.floor(top / table.fpt[top_opt])
        lo = min(p.N for p in points)
        idx = sorted({table.nearest(n) for n in np.geomspace(lo, table.N[top_opt], spec.sizes)})
        # a budget of exactly fpt x D buys exactly D tokens (tokens_for_flops rounds down)
        points += [_point(table, i, float(table.fpt[i]) * d_row, None, seeds) for i in idx]
    if any(p.D < batch_tokens for p in points):
        return None
    return Design(spec.label, tuple(points), spec=spec)


# ---------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class Cost:
    """The time model of `llmscale sweep --dry-run` (llmscale.sweep.estimate) for a design."""

    rate: Rate
    slots: Slots

    def run_seconds(self, base: RunConfig, p: PlannedPoint, slots=None) -> float:
        cfg = sized(base, p.hidden_dim)
        cfg = replace(cfg, train=replace(cfg.train, flops=p.flops, tokens=int(p.D)))
        pc = param_counts(cfg.vocab_size, cfg.model)
        acc = RunAccounting(pc.total, pc.embedding, pc.nonembedding, int(p.flops_per_token),
                            int(p.D), p.C)
        return self.rate.run_seconds(cfg, acc, slots)

    def wall_seconds(self, base: RunConfig, design: Design) -> float:
        """Training on the slots (longest first), then the analysis."""
        from llmscale.sweep.estimate import analysis_seconds, makespan

        secs = [self.run_seconds(design.config or base, p, self.slots)
                for p in design.points for _ in p.seeds]
        return makespan(secs, self.slots.n) + analysis_seconds(design.runs)

    def device_hours(self, base: RunConfig, design: Design) -> float:
        """Device time the design takes: each run's time on its slot (the dry run's estimate)
        x the devices it holds (GPUs per run; on CPU the machine) / the runs sharing them
        (`--runs-per-device`). GPU-hours on GPUs; on CPU, hours of the whole machine, about
        the sweep's training wall time."""
        per_run = max(1, self.slots.gpus_per_run) / self.slots.flop_slowdown
        return sum(self.run_seconds(design.config or base, p, self.slots) * per_run
                   for p in design.points for _ in p.seeds) / 3600


def cost_model(records=(), devices: str | None = None, runs_per_device: int = 1) -> Cost:
    from llmscale.sweep import estimate as est

    slots = est.local_slots(devices, runs_per_device)
    return Cost(est.rate_for(list(records), slots.device), slots)


@dataclass(frozen=True)
class Budget:
    """The whole study's budget: training FLOPs, or device-hours (`Cost.device_hours`)."""

    flops: float | None = None
    gpu_hours: float | None = None

    def __post_init__(self):
        assert (self.flops is None) != (self.gpu_hours is None)

    def spent(self, design: Design, base: RunConfig, cost: Cost) -> float:
        return design.flops if self.flops is not None else cost.device_hours(base, design)

    @property
    def amount(self) -> float:
        return self.flops if self.flops is not None else self.gpu_hours  # type: ignore[return-value]

    def show(self, v: float | None = None) -> str:
        v = self.amount if v is None else v
        return f"{v:.3g} FLOPs" if self.flops is not None else f"{v:.3g} GPU-hours"


def _layout(spec: DesignSpec, table: SizeTable, params: dict[str, float], log_top: float
            ) -> Design | None | TooLarge:
    try:
        return layout_design(spec, table, params, math.exp(log_top))
    except TooLarge as e:
        return e


MAX_DECADES = 40  # of FLOPs searched above one batch of the narrowest width


def _least_top(spec: DesignSpec, table: SizeTable, params: dict[str, float]) -> float | None:
    """log of the smallest top budget at which the design fits (None: at none): up by decades
    from one batch of the narrowest width until it fits, then bisection."""
    lo = math.log(table.fpt[0] * table.base.train.batch_size * table.base.train.seq_len)
    hi = lo
    for _ in range(MAX_DECADES):
        d = _layout(spec, table, params, hi)
        if isinstance(d, TooLarge):
            return None
        if d is not None:
            break
        lo, hi = hi, hi + math.log(10)
    else:
        return None
    while hi - lo > 1e-4:
        mid = 0.5 * (lo + hi)
        d = _layout(spec, table, params, mid)
        if d is None:
            lo = mid
        else:
            hi = mid
    return hi


def _over(d: Design | None | TooLarge, budget: Budget, base: RunConfig, cost: Cost) -> bool:
    """Past the budget, or past the widest width sized."""
    return isinstance(d, TooLarge) or (d is not None and budget.spent(d, base, cost)
                                       > budget.amount)


def size_design(spec: DesignSpec, table: SizeTable, params: dict[str, float], budget: Budget,
                cost: Cost, extent: dict[str, tuple[float, float]] | None = None
                ) -> Design | None:
    """The design scaled to spend the budget: the largest top budget whose design spends no
    more than it (bisection in log FLOPs between the least top budget at which the design fits
    and one that spends too much; the spend grows with the top budget). None when even the
    least one spends too much. A design capped by the widest width sized spends less.

    With `extent` (the N and D a prior's law was fitted on), the top budget is also capped so
    that no run's N or D lies more than EXTRAPOLATION times above them: such a design spends
    less than the budget. None when even the least top budget reaches past them."""

    def over(d: Design | None | TooLarge) -> bool:
        return _over(d, budget, table.base, cost) or (
            extent is not None and isinstance(d, Design) and _above(d, extent))

    least = _least_top(spec, table, params)
    if least is None:
        return None
    if over(_layout(spec, table, params, least)):
        return None
    lo, hi = least, least + math.log(10)
    for _ in range(MAX_DECADES):
        if over(_layout(spec, table, params, hi)):
            break
        lo, hi = hi, hi + math.log(10)
    while hi - lo > 1e-4:
        mid = 0.5 * (lo + hi)
        if over(_layout(spec, table, params, mid)):
            hi = mid
        else:
            lo = mid
    d = _layout(spec, table, params, lo)
    if not isinstance(d, Design):  # widths collapsing to fewer than 3 between least and lo
        d = _layout(spec, table, params, least)
    assert isinstance(d, Design)
    return d


def smallest_budget(table: SizeTable, params: dict[str, float], budget: Budget, cost: Cost,
                    specs=CANDIDATES) -> tuple[float, str] | None:
    """The least budget at which some candidate fits, and that candidate (for the message that
    a budget is too small)."""
    out = None
    for spec in specs:
        least = _least_top(spec, table, params)
        if least is None:
            continue
        d = _layout(spec, table, params, least)
        assert isinstance(d, Design)
        need = budget.spent(d, table.base, cost)
        if out is None or need < out[0]:
            out = (need, spec.label)
    return out


def design_from_config(cfg: RunConfig, label: str) -> Design:
    """A hand-made sweep (`--compare CONFIG`) as a design: its planned runs and their
    accounting. Runs of one shape (the fitter's: model, tokens, FLOP budget; llmscale.analysis
    SHAPE_KEYS) are one point trained several times, as seeds or learning rates are, and the
    simulated fit reduces them as `llmscale fit` does."""
    from llmscale.accounting import run_accounting
    from llmscale.sweep.plan import plan_points

    by_shape: dict[tuple, list] = {}
    for sp in plan_points(cfg, log=lambda _m: None):
        acc = run_accounting(sp.cfg)
        m = sp.cfg.model
        key = (m.kind, sp.cfg.vocab_size, m.embedding_dim, m.hidden_dim, m.num_layers,
               m.tie_weights, acc.tokens, sp.flops_budget)
        by_shape.setdefault(key, []).append((sp, acc))
    points = []
    for key, runs in by_shape.items():
        sp, acc = runs[0]
        points.append(PlannedPoint(key[3], float(sp.flops_budget or acc.flops),
                                   float(acc.params_nonembedding), float(acc.tokens),
                                   float(acc.flops_per_token), sp.flops_budget,
                                   tuple(s.cfg.train.seed for s, _ in runs)))
    return Design(label, tuple(points), config=_without_sweep(cfg))


# ============================================================================ simulation


@dataclass(frozen=True)
class SimTask:
    """One simulated sweep, as sent to a worker process (plain data only)."""

    design: int
    sim: int
    arrays: dict[str, np.ndarray]
    params: dict[str, float]  # the true law of this simulated sweep
    noise: float
    target: Target
    bootstrap: int
    seed: int


@dataclass(frozen=True)
class Estimate:
    """One quantity from one simulated fit: the estimate, its interval, the true value."""

    value: float
    lo: float | None
    hi: float | None
    truth: float
    samples: tuple[float, ...] = ()  # the quantity in each bootstrap resample's fit

    @property
    def covers(self) -> bool:
        return self.lo is not None and self.hi is not None and self.lo <= self.truth <= self.hi


QUANTITIES = ("target", "alpha", "beta", "E")


@dataclass(frozen=True)
class SimResult:
    design: int
    sim: int
    estimates: dict[str, Estimate | None]  # QUANTITIES; None: the fit gave no such value
    note: str = ""  # why the fit failed, when it did


def simulate(task: SimTask) -> SimResult:
    """Draw one sweep's losses from its true law and fit them as `llmscale fit` would."""
    from llmscale.fit.guard import plan_budget, predict_loss
    from llmscale.fit.pipeline import Runs, fit_runs

    a = task.arrays
    rng = np.random.default_rng([task.seed, task.design, task.sim])
    mean = predict(LAW, task.params, N=a["N"], D=a["D"])
    loss = mean * np.exp(rng.normal(0.0, task.noise, len(mean)))
    n = len(loss)
    # runs of one point (its seeds) share a shape, and the fitter reduces them to one, as it
    # does records of one width, token count and budget
    runs = Runs(tuple(f"sim{i}" for i in range(n)), a["N"], a["D"], a["C"], loss, a["fpt"],
                tuple((int(p),) for p in a["point"]))
    # A loosely constrained draw sends some resamples to overflow (inf samples, as in
    # `llmscale fit`); numpy's warnings about them would flood the terminal from every worker.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # No held-out refit: the plan reads the point fit and its intervals only.
        fit = fit_runs(runs, laws=(LAW,), bootstrap=task.bootstrap,
                       seed=int(rng.integers(2**31 - 1)), ci_level=CI_LEVEL, heldout=False)
    entry = fit.laws.get(LAW)
    if entry is None:
        return SimResult(task.design, task.sim, dict.fromkeys(QUANTITIES),
                         fit.not_fitted.get(LAW, ""))
    est: dict[str, Estimate | None] = {}
    for k in ("alpha", "beta", "E"):
        lo_hi = entry.intervals.get(k)
        est[k] = Estimate(entry.params[k], *(lo_hi or (None, None)), truth=task.params[k],
                          samples=tuple(float(x[k]) for x in entry.samples))
    t = task.target
    if t.kind == "exponents":
        est["target"] = None  # read from alpha and beta (`Evaluation`)
    elif t.kind == "E":
        est["target"] = est["E"]
    elif t.kind == "loss":
        p = predict_loss(fit, t.N, t.D, law=LAW, limit=math.inf)
        iv = p.interval or (None, None)
        with np.errstate(all="ignore"):
            drawn = tuple(float(predict(LAW, x, N=t.N, D=t.D)) for x in entry.finite_samples)
        est["target"] = Estimate(p.loss, *iv, samples=drawn,
                                 truth=float(predict(LAW, task.params, N=t.N, D=t.D)))
    else:
        q, r = flops_model(a["N"], a["fpt"])  # as the fitter models the runs' FLOPs per token
        true_alloc = chinchilla_optimal(task.params, q, r)
        assert true_alloc is not None  # the prior's parameters are positive
        truth = float(allocate(true_alloc, t.C)[0])
        try:
            p = plan_budget(fit, flops=t.C, limit=math.inf)
        except ValueError:
            est["target"] = None  # a fitted exponent is not positive: no allocation
        else:
            co = fit.compute_optimal.chinchilla
            assert co is not None  # plan_budget needs it
            iv = p.N_opt_interval or (None, None)
            est["target"] = Estimate(p.inputs["N"], *iv, truth=truth, samples=tuple(
                float(allocate(co, t.C, x)[0]) for x in co.samples))
    return SimResult(task.design, task.sim, est)


def width(kind: str, e: Estimate | None) -> float:
    """An interval's width: hi / lo for N_opt (a size is pinned to a factor), hi - lo
    otherwise; inf when the fit gave no interval."""
    if e is None or e.lo is None or e.hi is None:
        return math.inf
    if kind == "n_opt":
        return e.hi / e.lo if e.lo > 0 else math.inf
    return e.hi - e.lo


MIN_SAMPLES = 4  # bootstrap samples a simulated sweep needs for its interval


def sweep_intervals(kind: str, estimates: list[Estimate | None]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each simulated sweep's 95% bootstrap interval, from its few resamples: (width, whether
    it holds the true value), per sweep; inf and False for a sweep without an interval.

    The 2.5% and 97.5% percentiles of 10 or 20 resamples are nearly their minimum and maximum,
    which fall short of the distribution's tails: measured against 200-resample intervals (as
    `llmscale fit` draws) of independent sweeps, the median of such widths came out 30-40% too
    narrow at 10 resamples and 15-25% at 20 (README, "Planning a sweep"). So each sweep's scale
    is its resamples' interquartile range (quartiles that few samples estimate without that
    bias), and the shape (where the 2.5% and 97.5% points lie in units of that scale,
    measured from the sweep's median) comes from the resamples of the sweeps with a typical
    scale pooled: interval = median + IQR x [z_2.5, z_97.5]. N_opt is taken in log (its width
    is the factor hi/lo)."""
    log = kind == "n_opt"
    centred, scales, mids = [], [], []
    for e in estimates:
        x = np.array(e.samples if e is not None else (), dtype=float)
        with np.errstate(all="ignore"):
            x = np.log(x) if log else x
        x = x[np.isfinite(x)]
        if len(x) < MIN_SAMPLES:
            centred.append(None)
            scales.append(math.inf)
            mids.append(math.nan)
            continue
        q1, mid, q3 = np.percentile(x, [25, 50, 75])
        centred.append(x - mid)
        scales.append(float(q3 - q1))
        mids.append(float(mid))
    n = len(estimates)
    finite = np.array([s for s in scales if math.isfinite(s)])
    if not len(finite):
        return np.full(n, math.inf), np.zeros(n, dtype=bool)
    # the shape of the typical sweep (the middle half by scale): what the median width
    # describes. Pooled over every sweep, a few unconstrained ones with heavy tails widen
    # everyone's interval (measured at 3% noise: N_opt 2.9-3.6x too wide, 1.0-1.8x this way)
    q1, q3 = np.percentile(finite, [25, 75])
    z = [c / s for c, s in zip(centred, scales, strict=True)
         if c is not None and s > 0 and q1 <= s <= q3]
    if not z:
        return np.full(n, math.inf), np.zeros(n, dtype=bool)
    q = 100 * (1 - CI_LEVEL) / 2
    zlo, zhi = np.percentile(np.concatenate(z), [q, 100 - q])
    widths, covers = np.full(n, math.inf), np.zeros(n, dtype=bool)
    for i, (e, s, m) in enumerate(zip(estimates, scales, mids, strict=True)):
        if e is None or not math.isfinite(s):
            continue
        lo, hi = m + s * zlo, m + s * zhi
        truth = math.log(e.truth) if log else e.truth
        widths[i] = math.exp(hi - lo) if log else hi - lo
        covers[i] = lo <= truth <= hi
    return widths, covers


@dataclass(frozen=True)
class Evaluation:
    """A design and what its simulated sweeps say: per quantity, the median over the sweeps of
    their 95% interval widths (`sweep_intervals`), and the share of sweeps whose interval held
    the true value (coverage)."""

    design: Design
    widths: dict[str, float]  # QUANTITIES -> median width
    coverage: dict[str, float]  # QUANTITIES -> share of simulated intervals holding the truth
    failed: int  # simulated sweeps whose fit gave no usable target interval
    sims: int
    seconds: float  # estimated wall time (dry-run model)
    spend: float  # what it costs in the budget's unit

    @property
    def score(self) -> float:
        return self.widths["target"]


def summarise(design: Design, target: Target, results: list[SimResult], seconds: float,
              spend: float) -> Evaluation:
    per, cover = {}, {}
    for k in ("alpha", "beta", "E"):
        per[k], cover[k] = sweep_intervals(k, [r.estimates[k] for r in results])
    if target.kind == "exponents":  # both pinned: the wider of the two, both held
        per["target"] = np.maximum(per["alpha"], per["beta"])
        cover["target"] = cover["alpha"] & cover["beta"]
    else:
        per["target"], cover["target"] = sweep_intervals(
            target.kind, [r.estimates["target"] for r in results])
    widths = {k: float(np.median(v)) for k, v in per.items()}
    coverage = {k: float(np.mean(v)) for k, v in cover.items()}
    failed = int(np.sum(~np.isfinite(per["target"])))
    return Evaluation(design, widths, coverage, failed, len(results), seconds, spend)


def simulate_all(designs: list[Design], prior: Prior, target: Target, *, sims: int = SIMS,
                 bootstrap: int = SIM_BOOTSTRAP, jobs: int = 1, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> list[list[SimResult]]:
    """`sims` simulated sweeps of every design (per design, in order of `sim`). Deterministic
    for a seed, whatever `jobs`: each simulated sweep seeds its own draws.

    The workers are spawned processes: a script calling this needs the usual
    `if __name__ == "__main__":` guard (the CLI has it)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    rng = np.random.default_rng([seed, 7919])
    tasks = []
    for di, d in enumerate(designs):
        arrays = d.arrays()
        for si in range(sims):
            theta = (prior.samples[int(rng.integers(len(prior.samples)))] if prior.samples
                     else prior.params)
            tasks.append(SimTask(di, si, arrays, theta, prior.noise, target, bootstrap, seed))
    results: list[SimResult] = []
    jobs = max(1, min(jobs, len(tasks)))
    # spawned, not forked: a forked worker would inherit the parent's BLAS threads; each fit
    # runs BLAS on one thread (fit_runs: fit.robust.serial_blas)
    with ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            for r in pool.map(simulate, tasks, chunksize=max(1, len(tasks) // (8 * jobs))):
                results.append(r)
                if progress:
                    progress(len(results), len(tasks))
        except BrokenProcessPool as e:
            raise RuntimeError("the simulation's worker processes died before finishing (a "
                               "script that calls llmscale.design needs an `if __name__ == "
                               "'__main__':` guard)") from e
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: stop queued work
            raise
    return [sorted((r for r in results if r.design == di), key=lambda r: r.sim)
            for di in range(len(designs))]


def evaluate(designs: list[Design], prior: Prior, target: Target, *, sims: int = SIMS,
             bootstrap: int = SIM_BOOTSTRAP, jobs: int = 1, seed: int = 0,
             cost: Cost | None = None, budget: Budget | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Evaluation]:
    """Simulate and summarise every design (in the designs' order)."""
    results = simulate_all(designs, prior, target, sims=sims, bootstrap=bootstrap, jobs=jobs,
                           seed=seed, progress=progress)
    out = []
    for d, rs in zip(designs, results, strict=True):
        seconds = cost.wall_seconds(prior.base, d) if cost else math.nan
        spend = budget.spent(d, prior.base, cost) if (budget and cost) else d.flops
        out.append(summarise(d, target, rs, seconds, spend))
    return out


# ============================================================================ the plan


@dataclass(frozen=True)
class Plan:
    prior: Prior
    target: Target
    budget: Budget
    evaluations: tuple[Evaluation, ...]  # candidates first, then --compare designs
    best: int  # index of the best candidate
    sims: int
    bootstrap: int
    skipped: tuple[str, ...] = field(default=())  # candidates that do not fit the budget

    @property
    def chosen(self) -> Evaluation:
        return self.evaluations[self.best]


def plan(prior: Prior, target: Target, budget: Budget, *, cost: Cost,
         compare: list[Design] = (), specs=CANDIDATES, sims: int = SIMS,
         bootstrap: int = SIM_BOOTSTRAP, jobs: int = 1, seed: int = 0,
         progress: Callable[[int, int], None] | None = None) -> Plan:
    """Size every candidate to the budget, simulate them (and the `compare` designs), pick the
    narrowest expected target interval (ties: fewer FLOPs)."""
    table = size_table(prior.base)
    designs, skipped = [], []
    for spec in specs:
        # Within the prior's fit where the budget allows (a pilot's law says nothing beyond
        # its runs), else spending the whole budget; `plan` prefers the designs within.
        d = ((prior.extent and size_design(spec, table, prior.params, budget, cost,
                                           prior.extent))
             or size_design(spec, table, prior.params, budget, cost))
        if d is None:
            skipped.append(spec.label)
        else:
            designs.append(d)
    if not designs:
        least = smallest_budget(table, prior.params, budget, cost, specs)
        need = (f"; the smallest, {least[1]}, needs about {budget.show(least[0])}"
                if least else "")
        raise UserError(f"budget {budget.show()} is too small for any candidate design (each "
                        f"needs 3 widths per FLOP budget and at least one batch of "
                        f"{prior.base.train.batch_size} x {prior.base.train.seq_len} tokens per "
                        f"run){need}")
    evals = evaluate(designs + list(compare), prior, target, sims=sims, bootstrap=bootstrap,
                     jobs=jobs, seed=seed, cost=cost, budget=budget, progress=progress)
    n = len(designs)
    # The simulation draws every run from the prior's law, wherever it lies: a design that
    # reaches far beyond the runs the law was fitted on is predicted as if the law held there.
    # On the facts language (README, "Planning a sweep") the design chosen that way, with runs
    # of hidden 2 on 88k tokens, came out 12-19x wider than predicted. So the best is chosen
    # among the designs within the fit, when there are any.
    within = [i for i in range(n) if not beyond_fit(prior, designs[i])] or list(range(n))
    best = min(within, key=lambda i: (evals[i].score, evals[i].design.flops))
    return Plan(prior, target, budget, tuple(evals), best, sims, bootstrap, tuple(skipped))


def format_table(p: Plan) -> str:
    """design, runs, FLOPs, estimated time, expected widths of the target and of alpha, beta,
    E, and the target's coverage."""
    from llmscale.sweep.estimate import fmt_time

    t = p.target
    head = ("", "design", "runs", "FLOPs", "est. time", f"{t.label} [{t.unit}]", "alpha",
            "beta", "E", "covered")

    def w(v: float, k: str) -> str:
        if not math.isfinite(v):
            return "none"
        return f"x{v:.3g}" if k == "n_opt" else f"{v:.3g}"

    rows = []
    for i, e in enumerate(p.evaluations):
        mark = "*" if i == p.best else ("=" if e.design.spec is None else "")
        over = (" (over budget)" if e.design.spec is None and e.spend > p.budget.amount
                else "") + (" ^" if beyond_fit(p.prior, e.design) else "")
        rows.append((mark, e.design.label + over, str(e.design.runs), f"{e.design.flops:.3g}",
                     fmt_time(e.seconds), w(e.widths["target"], t.kind),
                     w(e.widths["alpha"], ""), w(e.widths["beta"], ""), w(e.widths["E"], ""),
                     f"{100 * e.coverage['target']:.0f}%"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)).rstrip()
             for r in [head, *rows]]
    return "\n".join(lines)


# ============================================================================ the sweep YAML


def sweep_config(p: Plan, name: str, out_dir: str) -> RunConfig:
    """The chosen design as a sweep config: the base run, `sweep.zip` of widths and FLOP
    budgets, `sweep.seeds` when there are several, the base's `sweep.derived`. Validated."""
    d = p.chosen.design
    base = p.prior.base
    seeds = d.points[0].seeds
    overrides: dict[str, Any] = {
        "name": name, "output.dir": out_dir,
        "sweep.zip": {"model.hidden_dim": [pt.hidden_dim for pt in d.points],
                      "train.flops": [pt.flops for pt in d.points]},
        "sweep.seeds": list(seeds) if len(seeds) > 1 else [],
        "sweep.grid": {}, "sweep.runs": [], "sweep.budgets": [],
    }
    if len(seeds) == 1:
        overrides["train.seed"] = seeds[0]
    return with_overrides(base, overrides)


def sweep_yaml(cfg: RunConfig, header: list[str]) -> str:
    """The config as a YAML file a person would write: the keys that differ from the defaults,
    the sweep's paired lists one per line, after `header` as comments."""
    import yaml

    doc = _non_default(cfg)
    sweep = doc.pop("sweep", {})
    output = doc.pop("output", None)
    text = "".join(f"# {line}\n" if line else "#\n" for line in header)
    text += yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    text += yaml.dump({"sweep": sweep}, Dumper=_sweep_dumper(), sort_keys=False,
                      default_flow_style=None, width=100)
    if output is not None:
        text += yaml.safe_dump({"output": output}, sort_keys=False, default_flow_style=False)
    return text


def _float(dumper, value: float):
    """FLOP budgets as 2.579e+10, not 25790000000.0 (with a dot: YAML 1.1 reads `1e+19`
    without one as a string)."""
    if not math.isfinite(value):
        return dumper.represent_float(value)
    mant, _, exp = f"{value:.16e}".partition("e")  # 17 digits: the same double read back
    mant = mant.rstrip("0")
    mant = mant + "0" if mant.endswith(".") else mant
    return dumper.represent_scalar("tag:yaml.org,2002:float", f"{mant}e{exp}")


def _sweep_dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(float, _float)
    return Dumper


def check_round_trip(text: str, design: Design) -> None:
    """The emitted YAML plans exactly the design's runs (widths, tokens, seeds)."""
    import yaml

    from llmscale.accounting import run_accounting
    from llmscale.sweep.plan import plan_points

    cfg = from_dict(yaml.safe_load(text))
    got = sorted((sp.cfg.model.hidden_dim, run_accounting(sp.cfg).tokens, sp.cfg.train.seed)
                 for sp in plan_points(cfg, log=lambda _m: None))
    want = sorted((p.hidden_dim, int(p.D), s) for p in design.points for s in p.seeds)
    assert got == want, (got, want)


# ============================================================================ the warnings' hint


def plan_command(fit: FitResult) -> str | None:
    """The `llmscale plan` command that designs a sweep to pin this fit's laws, for the
    warnings that call a law unconstrained; None when the fit cannot serve as a prior (no
    chinchilla law with positive parameters). The budget offered is 10x the FLOPs of the
    fitted runs: a starting point, whose expected intervals the plan itself reports."""
    entry = fit.laws.get(LAW)
    if entry is None or not all(entry.params.get(k, 0) > 0 for k in PARAMS):
        return None
    flops = sum(pt.C for pt in fit.points if pt.C)
    if not flops:
        return None
    src = Path(fit.source) if fit.source else None
    where = str(src.parent) if src is not None and src.name else "FIT_JSON"
    return (f"llmscale plan {where} --budget-flops {10 * flops:.2g} --target exponents "
            "--out plan.yaml")


# ============================================================================ what the CLI prints


TARGET_WHAT = {"n_opt": "N_opt at C = {C:.3g} FLOPs, as the factor hi/lo of its interval",
               "exponents": "alpha and beta, the wider of their two intervals",
               "E": "E, the irreducible loss (nats)",
               "loss": "the loss at N = {N:.3g}, D = {D:.3g} (nats)"}


def describe(p: Plan, cost: Cost) -> str:
    """The prior, how the widths were simulated, the table, and the chosen design."""
    pr, t = p.prior, p.target
    par = ", ".join(f"{k} {pr.params[k]:.4g}" for k in ("E", "A", "alpha", "B", "beta"))
    drawn = (f"the true law drawn from its {len(pr.samples)} samples" if pr.samples
             else "the law taken as exact (no samples)")
    what = TARGET_WHAT[t.kind].format(C=t.C, N=t.N, D=t.D)
    best = p.chosen
    lines = [
        f"prior: {pr.name}: {LAW} {par}; run noise {100 * pr.noise:.2g}% (std of log loss); "
        f"{drawn}" + (f" ({pr.description})" if pr.description else ""),
        f"budget: {p.budget.show()}; target {t.label}: {what}",
        f"simulated: {p.sims} sweeps per design, each fitted as `llmscale fit` does with "
        f"{p.bootstrap} bootstrap resamples; a width is the median over the sweeps of the 95% "
        "interval's width; covered: share of sweeps whose target interval held the true value",
        f"time: {cost.rate.how}; {cost.slots.how}",
        "",
        format_table(p),
        "",
        f"best: {best.design.label}: {best.design.runs} runs, {best.design.flops:.3g} FLOPs; "
        f"expected 95% interval of {t.label}: {_show_width(best.widths['target'], t.kind)}",
    ]
    better = [e for e in p.evaluations if e.design.spec is None and e.score < best.score]
    lines += [f"note: {e.design.label} has a narrower expected interval than the best candidate"
              for e in better]
    marked = sum(1 for e in p.evaluations if beyond_fit(pr, e.design))
    if marked:
        lines.append(f"note: ^ marks designs whose runs reach more than {EXTRAPOLATION:g}x beyond "
                     "the N or D the law was fitted on: their widths assume the law holds there, "
                     "and the best is chosen among the others"
                     + (" (here there are none)" if beyond_fit(pr, best.design) else ""))
    beyond = extrapolation(pr, best.design)
    if beyond:
        lines.append(f"note: {beyond}")
    failed = best.failed
    if failed:
        lines.append(f"note: {failed} of {best.sims} simulated sweeps of the best design gave no "
                     f"interval for {t.label} (a fitted exponent not positive, or too few points)")
    return "\n".join(lines)


# A design whose runs reach more than this factor beyond the N or D the prior's law was fitted
# on is "beyond the fit": marked in the table, chosen only when no candidate stays within.
EXTRAPOLATION = 2.0


def _above(design: Design, extent: dict[str, tuple[float, float]]) -> bool:
    return any(max(getattr(p, k) for p in design.points) > EXTRAPOLATION * extent[k][1]
               for k in ("N", "D"))


def beyond_fit(prior: Prior, design: Design) -> list[str]:
    """Where the design's runs reach more than EXTRAPOLATION beyond the N and D the prior's law
    was fitted on, one phrase per axis ([] when within, or when the extent is not known)."""
    if not prior.extent:
        return []
    parts = []
    for k in ("N", "D"):
        lo, hi = prior.extent[k]
        vals = [getattr(p, k) for p in design.points]
        if max(lo / min(vals), max(vals) / hi) > EXTRAPOLATION:
            parts.append(f"{k} {min(vals):.3g}-{max(vals):.3g} (the law's fit: {lo:.3g}-{hi:.3g})")
    return parts


def extrapolation(prior: Prior, design: Design) -> str:
    """How far the design's runs reach beyond the N and D the prior's law was fitted on ('' when
    within EXTRAPOLATION of them): there the plan assumes the law still holds."""
    parts = beyond_fit(prior, design)
    if not parts:
        return ""
    return ("the best design's runs reach " + ", ".join(parts) + ": its widths assume the law "
            "holds there; a pilot that covers those sizes and tokens makes them trustworthy")


def _show_width(v: float, kind: str) -> str:
    if not math.isfinite(v):
        return "none (most simulated fits gave no interval)"
    if kind == "n_opt":
        return f"hi/lo = {v:.3g} (about ±{100 * (math.sqrt(v) - 1):.0f}% around the middle)"
    return f"{v:.3g} wide"


def write_sweep(p: Plan, out: str | Path, *, name: str, command: str, header: str) -> str:
    """Write the chosen design's sweep YAML atomically to `out` (checked to plan exactly the
    design's runs first); returns the text."""
    from datetime import datetime, timezone

    from llmscale.atomic import atomic_write_text

    cfg = sweep_config(p, name, f"runs/{name}")
    e, t = p.chosen, p.target
    lines = [
        f"{header} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC:",
        f"  {command}",
        f"prior: {p.prior.name}; budget {p.budget.show()}; target {t.label}",
        f"design: {e.design.label}: {e.design.runs} runs, {e.design.flops:.3g} FLOPs",
        f"expected 95% interval widths ({p.sims} simulated sweeps): {t.label} "
        f"{_show_width(e.widths['target'], t.kind)}; alpha {e.widths['alpha']:.3g}, beta "
        f"{e.widths['beta']:.3g}, E {e.widths['E']:.3g}",
        "sweep.zip pairs each width with its FLOP budget; a budget buys each width the tokens it",
        "affords (llmscale.accounting). Budgets that are no IsoFLOP budget (each exactly",
        "flops_per_token x D) form the fixed-D row, when there is one.",
        "",
    ]
    text = sweep_yaml(cfg, lines)
    check_round_trip(text, p.chosen.design)
    atomic_write_text(out, text)
    return text
