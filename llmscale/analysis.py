"""Records -> scaling laws: read results.csv (or another CSV), fit with llmscale.fit, write the
typed fit result (fit.json), and read it back for plots, report and predict.

All formulas live in llmscale.fit (pure); this module does the reading and writing around
them. Nothing downstream refits: plots and report read `SweepData`, which holds the records
and the typed `FitResult`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmscale import layout
from llmscale.atomic import atomic_write_text
from llmscale.errors import UserError
from llmscale.fit.cost import COST_LAWS, fit_cost
from llmscale.fit.laws import LAW_NAMES, predict
from llmscale.fit.pipeline import Runs, fit_runs
from llmscale.fit.result import Crossing, FitResult, Floor, Skipped
from llmscale.fit.robust import serial_blas
from llmscale.records import RunRecord, read_results

# Runs that share these columns (and N and D, always: fit.pipeline.shape_keys) are one shape:
# several learning rates or seeds of one model, reduced to one point.
SHAPE_KEYS = ("model_kind", "vocab_size", "embedding_dim", "hidden_dim", "num_layers",
              "tie_weights", "tokens", "flops_budget")
DEFAULT_KIND = "lstm"  # results.csv from before model kinds: every run was an LSTM


def _resolve(source: str | Path) -> Path:
    p = Path(source)
    if p.is_dir():
        p = p / layout.RESULTS_FILE
    if not p.is_file():
        raise UserError(f"{p} does not exist; give a sweep directory with "
                        f"{layout.RESULTS_FILE} or a CSV")
    return p


def _num(v: Any) -> float:
    if v is None or v == "" or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def kind_of(rec: RunRecord) -> str:
    return getattr(rec, "model_kind", None) or DEFAULT_KIND


# ----------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Loaded:
    path: Path
    rows: list[tuple[str, dict, tuple, str]]  # (run_id, row, shape, kind)
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...]
    records: list[RunRecord]
    header: tuple[str, ...] = ()  # the table's own columns


def planned_ids(sweep_dir: Path, all_runs: bool) -> set[str] | None:
    """run_ids of the sweep's current plan (sweep.yaml), or None for every run: asked for
    (`all_runs`), or a bare results.csv without a sweep.yaml beside it."""
    if all_runs:
        return None
    from llmscale.sweep.state import planned_run_ids

    return planned_run_ids(sweep_dir)


def _in_plan(records: list[RunRecord], keep: set[str] | None) -> tuple[list[RunRecord], list[str]]:
    """Records of the current plan, and a note on the others (a grown or shrunk sweep keeps the
    runs that dropped out of its plan in results.csv; fits leave them out unless asked)."""
    if keep is None:
        return records, []
    kept = [r for r in records if r.run_id in keep]
    out = len(records) - len(kept)
    return kept, ([f"{out} run(s) in {layout.RESULTS_FILE} are no longer in the sweep's plan "
                   f"({layout.SWEEP_FILE}) and are left out (--all-runs includes them)"]
                  if out else [])


def _load_rows(path: Path, n_col: str, loss_col: str, all_runs: bool = False) -> Loaded:
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    missing = [c for c in (n_col, loss_col) if c not in header]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; it has: "
                        f"{', '.join(header)} (map them with --n/--loss)")
    if not ("run_id" in header and "status" in header):  # a plain CSV: one point per row
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [(f"row{i + 2}", row, (i,), DEFAULT_KIND)
                    for i, row in enumerate(csv.DictReader(fh))]
        return Loaded(path, rows, (), (), [], tuple(header))
    records, problems = read_results(path)
    records, dropped = _in_plan(records, planned_ids(path.parent, all_runs))
    problems = list(problems) + dropped
    rows, skipped = [], []
    for r in records:
        if r.status != "completed":
            skipped.append(Skipped(r.run_id, r.status, r.error or "not completed"))
            continue
        d = r.to_dict()
        rows.append((r.run_id, d, tuple(d.get(k) for k in SHAPE_KEYS), kind_of(r)))
    return Loaded(path, rows, tuple(skipped), tuple(problems), records, tuple(header))


def _runs(loaded: Loaded, n_col: str, d_col: str, c_col: str, loss_col: str
          ) -> tuple[Runs, list[str]]:
    notes = []
    header = set(loaded.rows[0][1]) if loaded.rows else set()
    is_records = bool(loaded.records)
    if d_col not in header and c_col in header:
        notes.append(f"D derived as C / (6 N): no column {d_col!r}")
    if c_col not in header and d_col in header and not is_records:
        notes.append(f"C derived as 6 N D: no column {c_col!r}")
    lacking = [k for k in SHAPE_KEYS if k not in loaded.header]
    if is_records and lacking:
        have = [k for k in SHAPE_KEYS if k in loaded.header and k != d_col]
        notes.append(f"{loaded.path.name} has no column(s) {', '.join(lacking)}: shapes are keyed "
                     f"by N ({n_col}) and D ({d_col})" + (f" and {', '.join(have)}" if have else "")
                     + "; only runs that share them (learning rates, seeds of one model) are "
                       "reduced to one point")
    cols: dict[str, list[float]] = {k: [] for k in ("N", "D", "C", "loss", "fpt")}
    for run_id, row, _, _ in loaded.rows:
        N, loss = _num(row.get(n_col)), _num(row.get(loss_col))
        if not (math.isfinite(loss) and loss > 0):
            raise UserError(f"{loaded.path}: run {run_id} has {loss_col}={row.get(loss_col)!r}; "
                            "losses must be positive numbers (drop or fix that row)")
        if not N > 0:
            raise UserError(f"{loaded.path}: run {run_id} has {n_col}={row.get(n_col)!r}; "
                            "N must be > 0")
        D, C, fpt = _num(row.get(d_col)), _num(row.get(c_col)), _num(row.get("flops_per_token"))
        if math.isnan(D) and math.isfinite(C):
            D = C / (fpt if fpt > 0 else 6 * N)
        if math.isnan(C) and math.isfinite(D) and not is_records:
            C = 6 * N * D
        for k, v in (("N", N), ("D", D), ("C", C), ("loss", loss), ("fpt", fpt)):
            cols[k].append(v)
    a = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    runs = Runs(tuple(r[0] for r in loaded.rows), a["N"], a["D"], a["C"], a["loss"], a["fpt"],
                tuple(r[2] for r in loaded.rows))
    return runs, notes


# ----------------------------------------------------------------------------- fitting


def fit_sweep(source: str | Path, *, laws=None, out_dir=None, n_column="params_nonembedding",
              d_column="tokens", c_column="flops", loss_column="val_loss", reduce="best",
              bootstrap=200, seed=0, all_runs=False, workers=None) -> FitResult:
    """Fit every requested law (default: all the data supports) and write fit.json. A sweep with
    several model kinds gets one fit per kind under `groups` as well. Runs that are no longer
    in the sweep's plan are left out unless `all_runs`. `workers`: processes for the bootstrap
    (None: fit.robust.default_workers, the idle CPUs; the result does not depend on it)."""
    if reduce not in ("best", "mean"):
        raise UserError(f"reduce={reduce!r}; allowed: best, mean")
    unknown = [law for law in laws or [] if law not in LAW_NAMES]
    if unknown:
        raise UserError(f"unknown law(s) {', '.join(unknown)}; known: {', '.join(LAW_NAMES)}")
    if bootstrap < 0:
        raise UserError(f"bootstrap={bootstrap}; give 0 (no intervals) or more resamples")
    path = _resolve(source)
    loaded = _load_rows(path, n_column, loss_column, all_runs)
    if not loaded.rows:
        raise UserError(f"{path}: no completed run to fit")
    runs, notes = _runs(loaded, n_column, d_column, c_column, loss_column)
    with serial_blas():  # the cost laws' L-BFGS too (fit_runs limits its own)
        return _fit_and_write(path, loaded, runs, notes, laws=laws, out_dir=out_dir,
                              n_column=n_column, loss_column=loss_column, reduce=reduce,
                              bootstrap=bootstrap, seed=seed, all_runs=all_runs, workers=workers)


def _fit_and_write(path, loaded, runs, notes, *, laws, out_dir, n_column, loss_column, reduce,
                   bootstrap, seed, all_runs, workers) -> FitResult:
    common = dict(laws=laws, reduce_how=reduce, bootstrap=bootstrap, seed=seed,
                  source=str(path), n_column=n_column, loss_column=loss_column,
                  floor=_floor(loaded.records), workers=workers)
    result = fit_runs(runs, skipped=loaded.skipped, notes=loaded.notes + tuple(notes),
                      cost=_cost_laws(loaded, n_column, bootstrap, seed), **common)
    if laws:
        refused = [why for k, why in result.not_fitted.items() if k in laws]
        if refused:
            raise UserError(refused[0])
    if not result.laws:
        raise UserError(f"{path}: no law can be fitted: " + "; ".join(result.not_fitted.values()))
    kinds = sorted({r[3] for r in loaded.rows})
    if len(kinds) > 1:
        groups = {}
        for kind in kinds:
            idx = [i for i, r in enumerate(loaded.rows) if r[3] == kind]
            sub = replace(loaded, rows=[loaded.rows[i] for i in idx],
                          records=[r for r in loaded.records if kind_of(r) == kind])
            groups[kind] = fit_runs(runs.take(idx), model_kind=kind, skipped=(),
                                    cost=_cost_laws(sub, n_column, bootstrap, seed), **common)
        result = replace(result, groups=groups, crossings=crossings(groups))
    result = replace(result, all_runs=all_runs)
    atomic_write_text(Path(out_dir or path.parent) / layout.FIT_FILE, result.to_json())
    return result


def _cost_laws(loaded: Loaded, n_column: str, resamples: int, seed: int) -> dict:
    """Cost laws over the completed runs (every run, not reduced: each one cost what it cost)."""
    done = [row for _, row, _, _ in loaded.rows] if loaded.records else []
    cost = {}
    for col, xexpr in COST_LAWS:
        if col == "gpu_hours" and not any((row.get("gpu_count") or 0) > 0 for row in done):
            continue  # every run was on CPU: no GPU-hours to fit
        xs = [_num(d.get(n_column)) * (_num(d.get("tokens")) if xexpr == "N*D" else 1.0)
              for d in done]
        entry = fit_cost(col, xexpr, xs, [_num(d.get(col)) for d in done],
                         resamples=min(resamples, 200), seed=seed)
        if entry:
            cost[col] = entry
    return cost


def _floor(records: list[RunRecord]) -> Floor | None:
    done = [r for r in records if r.status == "completed" and r.data_entropy_bpb
            and r.val_bytes_per_token]
    if not done:
        return None
    bpb = float(np.median([r.data_entropy_bpb for r in done]))
    bpt = float(np.median([r.val_bytes_per_token for r in done]))
    theory = {k: float(np.median(v)) for k, v in (
        ("alpha", [r.data_theory_alpha for r in done if r.data_theory_alpha is not None]),
        ("beta", [r.data_theory_beta for r in done if r.data_theory_beta is not None])) if v}
    return Floor(entropy_bpb=bpb, entropy_nats_per_token=bpb * math.log(2) * bpt, theory=theory)


CROSSING_LAWS = (("compute", "C"), ("saturating", "N"), ("power", "N"))


def crossings(groups: dict[str, FitResult], span: float = 1e3) -> tuple[Crossing, ...]:
    """Where each pair of kinds' curves cross, per law, searched from 1/span of the smallest to
    span x the largest fitted input; the interval from paired bootstrap samples."""
    out = []
    kinds = sorted(groups)
    for law, x in CROSSING_LAWS:
        for i, a in enumerate(kinds):
            for b in kinds[i + 1:]:
                fa, fb = groups[a].laws.get(law), groups[b].laws.get(law)
                if fa is None or fb is None:
                    continue
                vals = [p.C if x == "C" else p.N for g in (groups[a], groups[b])
                        for p in g.points if (p.C if x == "C" else p.N)]
                grid = np.logspace(np.log10(min(vals) / span), np.log10(max(vals) * span), 2000)
                at = _cross(law, fa.params, fb.params, x, grid)
                pairs = list(zip(fa.finite_samples, fb.finite_samples, strict=False))
                sampled = [c for c in (_cross(law, sa, sb, x, grid) for sa, sb in pairs)
                           if c is not None]
                interval = (tuple(float(v) for v in np.percentile(sampled, [2.5, 97.5]))
                            if len(sampled) >= 2 else None)
                out.append(Crossing(law, (a, b), x, at, interval,
                                    len(sampled) / len(pairs) if pairs else 0.0))
    return tuple(out)


def _cross(law: str, pa: dict, pb: dict, x: str, grid: np.ndarray) -> float | None:
    with np.errstate(all="ignore"):
        d = np.log(predict(law, pa, **{x: grid})) - np.log(predict(law, pb, **{x: grid}))
    ok = np.isfinite(d)
    s = np.flatnonzero(ok[:-1] & ok[1:] & (np.sign(d[:-1]) != np.sign(d[1:])))
    if len(s) == 0:
        return None
    lg = np.log10(grid)
    t = d[s] / (d[s] - d[s + 1])  # each crossing, interpolated in log x
    xs = lg[s] + t * (lg[s + 1] - lg[s])
    # Curves may cross more than once: the crossing nearest the data (the grid's centre, the
    # data's geometric middle) is the one the runs speak to.
    return float(10 ** xs[np.argmin(np.abs(xs - 0.5 * (lg[0] + lg[-1])))])


# ----------------------------------------------------------------------------- reading


def read_fit(path: str | Path) -> FitResult:
    """The typed fit result from a fit.json (or a sweep directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / layout.FIT_FILE
    if not p.is_file():
        raise UserError(f"{p} does not exist; run `llmscale fit` first")
    try:
        return FitResult.from_json(p.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{p} is not a fit this llmscale can read ({e}); rerun "
                        "`llmscale fit`") from e


@dataclass(frozen=True)
class SweepData:
    """What the figures and the report read: the records, their problems, and the fit."""

    sweep_dir: Path
    records: list[RunRecord]
    problems: list[str]  # unreadable results.csv rows
    fit: FitResult | None  # None when there is no fit
    fit_note: str  # why there is no fit, or why it may be stale; "" when fresh


def load_sweep(sweep_dir: Path, *, refit: bool = True, bootstrap: int | None = None,
               all_runs: bool = False) -> SweepData:
    """Records and the fit of a sweep directory, fitting first when fit.json is missing or
    older than results.csv (`refit`). A fit that cannot be made (too few completed runs) is not
    an error here: figures that need no fit are still drawn, and the report says why."""
    sweep_dir = Path(sweep_dir)
    results = layout.results_path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} does not exist")
    if not results.is_file():
        raise UserError(f"{results} not found: SWEEP_DIR must hold a sweep's "
                        f"{layout.RESULTS_FILE}")
    records, problems = read_results(results)
    records, _ = _in_plan(records, planned_ids(sweep_dir, all_runs))  # the fit notes say it
    if not records:
        raise UserError(f"{results} holds no readable runs" +
                        (f" ({len(problems)} unreadable rows)" if problems else ""))
    fit_file = layout.fit_path(sweep_dir)
    fresh = fit_file.is_file() and fit_file.stat().st_mtime >= results.stat().st_mtime
    note = refit_sweep(sweep_dir, bootstrap, all_runs) if refit and not fresh else ""
    fit = None
    if fit_file.is_file():
        try:
            fit = read_fit(fit_file)
            if refit and not note and fit.all_runs != all_runs:  # fitted on other runs
                note = refit_sweep(sweep_dir, bootstrap, all_runs)
                fit = read_fit(fit_file)
        except UserError as e:  # a fit.json from an older llmscale: refit it once
            if not refit or note:
                raise
            note = refit_sweep(sweep_dir, bootstrap, all_runs)
            if note:
                raise UserError(f"{e}; refitting failed too: {note}") from None
            fit = read_fit(fit_file)
    if note and fit is not None:  # the refit failed but an older fit exists: use it, say so
        note = f"{note}; showing the older {layout.FIT_FILE}"
    return SweepData(sweep_dir, records, problems, fit, note)


def refit_sweep(sweep_dir: Path, bootstrap: int | None = None, all_runs: bool = False) -> str:
    """Fit the sweep (writes fit.json); '' on success, else why it could not be fitted."""
    try:
        fit_sweep(sweep_dir, all_runs=all_runs,
                  **({} if bootstrap is None else {"bootstrap": bootstrap}))
    except UserError as e:
        return f"no fit: {e}"
    return ""
