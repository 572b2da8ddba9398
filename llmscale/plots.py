"""Figures of a sweep: records (results.csv, metrics.csv) + fits (fit.json), no fitting.

`make_plots(sweep_dir)` draws every figure the data supports as PNG and SVG under
`SWEEP_DIR/plots/`, and writes `plots/plots.json`: for each figure its files and caption,
or the reason it could not be drawn (the report shows both). Law curves come from
`llmscale.fit.laws.predict`, the one place a law's formula lives.

Figures are built with the object API (`Figure` + the Agg canvas), not pyplot: no global
figure registry to leak between calls, and a caller's interactive backend is left alone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmscale.errors import UserError
from llmscale.records import RESULTS_FILE, RunRecord, read_results, write_json

FIT_FILE = "fit.json"
PLOTS_DIR = "plots"
MANIFEST = "plots.json"
DPI = 150  # PNG resolution, dots per inch

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
             "#000000")
SIZE_CMAP = "viridis"  # continuous size colouring: perceptually uniform, cb-safe

# The N-laws in a fixed order, so a law keeps its colour across figures and sweeps.
LAW_ORDER = ("linear", "power", "saturating", "chinchilla", "compute")
LAW_LABELS = {
    "linear": "linear  L = aN + b",
    "power": "power  L = A N^-α",
    "saturating": "saturating  L = E + A N^-α",
    "chinchilla": "Chinchilla  L = E + A N^-α + B D^-β",
    "compute": "compute  L = E + A C^-γ",
}

# Axis labels with units, by results.csv column.
COLUMN_LABELS = {
    "params_nonembedding": "non-embedding parameters N",
    "params_total": "total parameters N",
    "val_loss": "validation loss (nats/token)",
    "train_loss": "training loss (nats/token)",
    "val_bpb": "validation loss (bits/byte)",
    "tokens": "training tokens D",
    "flops": "training compute C (FLOPs)",
}


def law_color(law: str) -> str:
    i = LAW_ORDER.index(law) if law in LAW_ORDER else len(LAW_ORDER)
    return OKABE_ITO[i % len(OKABE_ITO)]


def predict(law: str, params: dict[str, float], N=None, D=None, C=None) -> np.ndarray:
    """The fitter's law evaluator, the one place a law's formula lives."""
    from llmscale.fit.laws import predict as _predict

    return np.asarray(_predict(law, params, N=N, D=D, C=C), dtype=float)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SweepData:
    """What the figures and the report read: the records, their problems, and the fit."""

    sweep_dir: Path
    records: list[RunRecord]
    problems: list[str]  # unreadable results.csv rows
    fit: dict[str, Any] | None  # fit.json, or None when there is no fit
    fit_note: str  # why there is no fit, or why it may be stale; "" when fresh


def load_sweep(sweep_dir: Path, *, refit: bool = True, bootstrap: int | None = None) -> SweepData:
    """Read results.csv and a fit.json that is fresh (newer than results.csv), fitting first if not.

    A fit that cannot be made (too few completed runs, the fitter not installed) is not an
    error here: the figures that need no fit are still drawn, and the report says why.
    """
    sweep_dir = Path(sweep_dir)
    results = sweep_dir / RESULTS_FILE
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} does not exist")
    if not results.is_file():
        raise UserError(f"{results} not found: SWEEP_DIR must hold a sweep's {RESULTS_FILE}")
    records, problems = read_results(results)
    if not records:
        raise UserError(f"{results} holds no readable runs" +
                        (f" ({len(problems)} unreadable rows)" if problems else ""))

    fit_path = sweep_dir / FIT_FILE
    fresh = fit_path.is_file() and fit_path.stat().st_mtime >= results.stat().st_mtime
    note = ""
    if refit and not fresh:
        note = run_fit(sweep_dir, bootstrap=bootstrap)
    fit = None
    if fit_path.is_file():
        try:
            fit = json.loads(fit_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{fit_path} is not valid JSON ({e}); rerun `llmscale fit "
                            f"{sweep_dir}`") from e
        if note:  # the refit failed but an older fit exists: use it, and say so
            note = f"{note}; showing the older {FIT_FILE}"
    return SweepData(sweep_dir, records, problems, fit, note)


def run_fit(sweep_dir: Path, bootstrap: int | None = None) -> str:
    """Fit the sweep (writes fit.json); '' on success, else why it could not be fitted.

    bootstrap: resamples for the confidence intervals (None: the fitter's default).
    """
    try:
        from llmscale.analysis import fit_sweep
    except ImportError as e:
        return f"the fitter is not available ({e})"
    try:
        fit_sweep(sweep_dir, **({} if bootstrap is None else {"bootstrap": bootstrap}))
    except UserError as e:
        return f"no fit: {e}"
    return ""


# --------------------------------------------------------------------------- entry points


def make_plots(sweep_dir: Path, data: SweepData | None = None,
               formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Draw every figure the sweep supports; returns the image paths written (PNG and SVG)."""
    data = data or load_sweep(Path(sweep_dir))
    out = Path(sweep_dir) / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    for name, draw in FIGURES:
        try:
            fig, caption = draw(data)
        except _NoFigure as why:
            fig, caption = None, str(why)
        if fig is None:
            for ext in ("png", "svg"):  # a figure that cannot be drawn now must not linger
                (out / f"{name}.{ext}").unlink(missing_ok=True)
            manifest[name] = {"files": [], "missing": caption}
            continue
        paths = _save(fig, out / name, formats)
        written += paths
        manifest[name] = {"files": [p.name for p in paths], "caption": caption}
    write_json(out / MANIFEST, manifest)
    return written


def plot_cli(sweep_dir: Path) -> int:
    data = load_sweep(Path(sweep_dir))
    if data.fit_note:
        print(f"llmscale: {data.fit_note}", file=sys.stderr)
    paths = make_plots(Path(sweep_dir), data)
    manifest = json.loads((Path(sweep_dir) / PLOTS_DIR / MANIFEST).read_text(encoding="utf-8"))
    for name, entry in manifest.items():
        if entry["files"]:
            print(f"{name}: {', '.join(entry['files'])}")
        else:
            print(f"{name}: not drawn: {entry['missing']}")
    print(f"{len(paths)} files under {Path(sweep_dir) / PLOTS_DIR}")
    return 0


class _NoFigure(Exception):
    """A figure the data does not support; the message says why (shown in the report)."""


def _save(fig, stem: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Each format written to a temp file and renamed (a reader never sees half a file)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    for ax in fig.axes:
        _tidy_log_x(ax)
    paths = []
    for ext in formats:
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        # No date in the metadata: the same data gives byte-identical files.
        meta = {"Date": None} if ext == "svg" else {"Software": "llmscale"}
        fig.savefig(tmp, format=ext, dpi=DPI, metadata=meta)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _tidy_log_x(ax) -> None:
    """Minor tick labels on a log x-axis only when it spans under 1.5 decades, rotated so that
    neighbours (3x10^6, 4x10^6) do not run into each other."""
    if ax.get_xscale() != "log":
        return
    from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

    lo, hi = ax.get_xlim()
    if lo > 0 and math.log10(hi / lo) > 1.5:
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False,
                                                             minor_thresholds=(2, 0.4)))
        ax.tick_params(axis="x", which="both", labelrotation=30)


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), constrained_layout=True)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


# --------------------------------------------------------------------------- helpers


def _col(fit: dict[str, Any] | None, key: str, default: str) -> str:
    return str((fit or {}).get(key) or default)


def _label(column: str) -> str:
    return COLUMN_LABELS.get(column, column)


def _value(rec: RunRecord, column: str) -> float | None:
    v = getattr(rec, column, None)
    if v is None or isinstance(v, (str, bool)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _completed(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.status == "completed"]


def fitted_laws(fit: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The laws of fit.json that have parameters (an entry may only say why it failed)."""
    laws = (fit or {}).get("laws") or {}
    return {k: v for k, v in laws.items() if isinstance(v, dict) and isinstance(v.get("params"),
                                                                                   dict)}


def heldout_ids(fit: dict[str, Any] | None, inputs: list[str] | None = None) -> set[str]:
    """Runs some law held out (the largest ones, by the fitter's rule); only laws of `inputs`
    when given."""
    ids: set[str] = set()
    for law in fitted_laws(fit).values():
        if inputs is None or list(law.get("inputs") or []) == inputs:
            ids.update((law.get("heldout") or {}).get("heldout_run_ids") or [])
    return ids


def _used_by_n_laws(fit: dict[str, Any] | None) -> set[str] | None:
    """Runs the laws of N were fitted to (each size's best over token budgets), or None when no
    such law reports its residuals."""
    ids = None
    for law in fitted_laws(fit).values():
        if list(law.get("inputs") or []) == ["N"] and law.get("residuals"):
            ids = (ids or set()) | {r["run_id"] for r in law["residuals"]}
    return ids


def _grid(values, lo_pad: float = 1.5, hi_pad: float = 3.0, n: int = 200) -> np.ndarray:
    v = np.asarray([x for x in values if x and x > 0], dtype=float)
    return np.logspace(math.log10(v.min() / lo_pad), math.log10(v.max() * hi_pad), n)


def _band(law: str, entry: dict[str, Any], **inputs) -> tuple[np.ndarray, np.ndarray] | None:
    """Percentile band of the bootstrap samples' predictions (None without samples)."""
    samples = (entry.get("bootstrap") or {}).get("samples") or []
    if len(samples) < 2:
        return None
    preds = np.stack([predict(law, s, **inputs) for s in samples])
    preds[~np.isfinite(preds) | (preds <= 0)] = np.nan  # log axes: a non-positive loss is off-plot
    level = float(entry.get("ci_level") or 0.95)
    q = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column stays NaN
        lo, hi = np.nanpercentile(preds, [q, 100 - q], axis=0)
    return lo, hi


def _positive(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float).copy()
    y[~np.isfinite(y) | (y <= 0)] = np.nan
    return y


def _floor(data: SweepData) -> float | None:
    """The synthetic source's entropy rate in the loss's units (nats/token), if known."""
    floor = (data.fit or {}).get("floor") or {}
    if _col(data.fit, "loss", "val_loss") == "val_bpb":
        return floor.get("entropy_bpb")
    return floor.get("entropy_nats_per_token")


def _fit_points(data: SweepData) -> list[dict[str, Any]]:
    """The fitted points; without a fit, every completed run with N and a loss."""
    if data.fit and data.fit.get("points"):
        return [p for p in data.fit["points"] if p.get("N") and p.get("loss") is not None]
    n_col, l_col = _col(data.fit, "n", "params_nonembedding"), _col(data.fit, "loss", "val_loss")
    pts = []
    for r in _completed(data.records):
        n, loss = _value(r, n_col), _value(r, l_col)
        if n and loss is not None:
            pts.append({"run_id": r.run_id, "N": n, "D": _value(r, "tokens"),
                        "C": _value(r, "flops"), "loss": loss})
    return pts


def _scatter_points(ax, pts, held: set[str], x: str, color: str, label: str) -> None:
    fitted = [p for p in pts if p["run_id"] not in held]
    out = [p for p in pts if p["run_id"] in held]
    if fitted:
        ax.scatter([p[x] for p in fitted], [p["loss"] for p in fitted], s=30, color=color,
                   zorder=3, label=label)
    if out:
        ax.scatter([p[x] for p in out], [p["loss"] for p in out], s=60, facecolors="none",
                   edgecolors=color, linewidths=1.5, zorder=3, label="held out (not fitted)")


def _plain_log_ticks(axis) -> None:
    """Label a log axis 2, 3, 4 ... rather than 2x10^0 when it spans under a decade or two."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _log_axes(ax, xs, ys) -> None:
    """Log scale on an axis whose positive data spans more than a decade (linear otherwise)."""
    for values, setter in ((xs, ax.set_xscale), (ys, ax.set_yscale)):
        v = [x for x in values if x is not None and x > 0]
        if v and max(v) / min(v) > 10:
            setter("log")


# --------------------------------------------------------------------------- figures


def fig_loss_vs_params(data: SweepData):
    pts = _fit_points(data)
    if not pts:
        raise _NoFigure("no completed run has both N and a loss")
    fit = data.fit or {}
    n_col, l_col = _col(fit, "n", "params_nonembedding"), _col(fit, "loss", "val_loss")
    held = heldout_ids(fit, ["N"])
    fig, axes = _figure()
    ax = axes[0, 0]
    used = _used_by_n_laws(fit)
    if used is not None and len(used) < len(pts):
        # A sweep that also varies D: L(N) is fitted to each size's lowest loss; the runs
        # with fewer tokens are shown for context, in grey.
        others = [p for p in pts if p["run_id"] not in used]
        ax.scatter([p["N"] for p in others], [p["loss"] for p in others], s=18,
                   color="#BBBBBB", zorder=2, label="runs on fewer tokens (not in L(N))")
        pts_n = [p for p in pts if p["run_id"] in used]
    else:
        pts_n = pts
    _scatter_points(ax, pts_n, held, "N", "#000000", "runs (fitted)")
    grid = _grid([p["N"] for p in pts])
    laws = fitted_laws(fit)
    drawn = []
    for law in LAW_ORDER:
        entry = laws.get(law)
        if not entry or list(entry.get("inputs") or []) != ["N"]:
            continue
        color = law_color(law)
        y = _positive(predict(law, entry["params"], N=grid))
        err = (entry.get("heldout") or {}).get("mean_abs_rel_err")
        label = LAW_LABELS.get(law, law) + (f"  (held-out err {100 * err:.1f}%)"
                                            if err is not None else "")
        ax.plot(grid, y, color=color, lw=1.8, label=label,
                ls="-." if law == "linear" else "-")
        band = _band(law, entry, N=grid)
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color=color, alpha=0.18, lw=0)
        drawn.append(law)
    floor = _floor(data)
    if floor:
        ax.axhline(floor, color="#555555", ls="--", lw=1.3, label=f"entropy floor ({floor:.3g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # The data (and floor) set the view: a law that runs away outside it (the linear one
    # crossing zero) must not squash the points into a sliver.
    ys = [p["loss"] for p in pts if p["loss"] > 0] + ([floor] if floor else [])
    ax.set_ylim(min(ys) / 1.15, max(ys) * 1.15)
    ax.set_xlim(grid[0], grid[-1])
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel(_label(n_col))
    ax.set_ylabel(_label(l_col))
    ax.set_title("Loss vs model size")
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, which="both", alpha=0.25)
    level = next((laws[k].get("ci_level") for k in drawn if laws[k].get("ci_level")), 0.95)
    caption = (f"{_label(l_col)} against {_label(n_col)}, log-log. Lines: fitted laws of N "
               f"({', '.join(drawn) or 'none fitted'}); shaded: {100 * level:.0f}% bootstrap "
               "band; hollow markers: runs held out of the fit.")
    return fig, caption


def fig_loss_vs_compute(data: SweepData):
    fit = data.fit or {}
    l_col = _col(fit, "loss", "val_loss")
    runs = [(r, _value(r, "flops"), _value(r, l_col), _value(r, _col(fit, "n",
                                                                      "params_nonembedding")))
            for r in _completed(data.records)]
    runs = [(r, c, loss, n) for r, c, loss, n in runs if c and loss is not None]
    if not runs:
        raise _NoFigure("no completed run has both FLOPs and a loss")
    from matplotlib.colors import LogNorm

    co = fit.get("compute_optimal") or {}
    two = bool(co.get("chinchilla") or (co.get("isoflop") or {}).get("budgets"))
    fig, axes = _figure(ncols=2 if two else 1)
    ax = axes[0, 0]
    cs = np.array([c for _, c, _, _ in runs])
    ls = np.array([loss for _, _, loss, _ in runs])
    ns = np.array([n if n else np.nan for _, _, _, n in runs])
    if np.isfinite(ns).any():
        norm = LogNorm(np.nanmin(ns), max(np.nanmax(ns), np.nanmin(ns) * 1.01))
        sc = ax.scatter(cs, ls, c=ns, cmap=SIZE_CMAP, norm=norm, s=28, zorder=3, label="runs")
        fig.colorbar(sc, ax=ax, label=_label(_col(fit, "n", "params_nonembedding")))
    else:
        ax.scatter(cs, ls, color=OKABE_ITO[0], s=28, zorder=3, label="runs")
    # The empirical frontier: the lowest loss reached at or below each compute.
    order = np.argsort(cs)
    frontier = np.minimum.accumulate(ls[order])
    keep = np.r_[True, frontier[1:] < frontier[:-1]]
    ax.step(cs[order][keep], frontier[keep], where="post", color="#000000", lw=1.2,
            label="empirical frontier")
    grid = _grid(cs, 1.5, 10.0)
    laws = fitted_laws(fit)
    if laws.get("compute"):
        entry = laws["compute"]
        ax.plot(grid, _positive(predict("compute", entry["params"], C=grid)),
                color=law_color("compute"), lw=1.8, label=LAW_LABELS["compute"])
        band = _band("compute", entry, C=grid)
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color=law_color("compute"), alpha=0.18, lw=0)
    n_opt, d_opt = _chinchilla_optimal(co.get("chinchilla"), grid)
    if n_opt is not None and laws.get("chinchilla"):
        ax.plot(grid, _positive(predict("chinchilla", laws["chinchilla"]["params"], N=n_opt,
                                        D=d_opt)),
                color=law_color("chinchilla"), lw=1.8, ls="--",
                label="compute-optimal (Chinchilla fit)")
    ax.set_xscale("log")
    _log_axes(ax, [], ls)
    # The runs set the view: a wide bootstrap band at the edge must not flatten them.
    if ax.get_yscale() == "log":
        ax.set_ylim(min(ls) / 1.2, max(ls) * 1.2)
    else:
        ax.set_ylim(min(ls) - 0.1 * np.ptp(ls) - 0.05 * abs(min(ls)),
                    max(ls) + 0.1 * np.ptp(ls) + 0.05 * abs(max(ls)))
    ax.set_xlabel(_label("flops"))
    ax.set_ylabel(_label(l_col))
    ax.set_title("Loss vs compute")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    if two:
        _draw_allocation(axes[0, 1], co, grid, n_opt)
    return fig, ("Loss against training compute, coloured by model size; the step line is the "
                 "lowest loss reached so far. Right: the compute-optimal model size N_opt(C) "
                 "from the Chinchilla fit and the IsoFLOP minima, where available.")


def _chinchilla_optimal(entry: dict[str, Any] | None, C: np.ndarray):
    """N_opt(C), D_opt(C) from fit.json's allocation, through the fitter's evaluator."""
    if not entry or not all(k in entry for k in ("a", "b", "G")):
        return None, None
    from llmscale.fit.frontier import allocate

    return allocate(entry, C)


def _draw_allocation(ax, co: dict[str, Any], grid: np.ndarray, n_opt) -> None:
    if n_opt is not None:
        a = co["chinchilla"]["a"]
        ax.plot(grid, n_opt, color=law_color("chinchilla"), lw=1.8,
                label=f"Chinchilla fit: N_opt ∝ C^{a:.2f}")
    budgets = (co.get("isoflop") or {}).get("budgets") or []
    if budgets:
        a = (co.get("isoflop") or {}).get("a")
        ax.scatter([b["C"] for b in budgets], [b["N_opt"] for b in budgets], marker="D", s=40,
                   color=OKABE_ITO[1], zorder=3,
                   label="IsoFLOP minima" + (f" (N_opt ∝ C^{a:.2f})" if a is not None else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_label("flops"))
    ax.set_ylabel("compute-optimal parameters N_opt")
    ax.set_title("Compute-optimal model size")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)


def fig_isoflop(data: SweepData):
    budgets = (((data.fit or {}).get("compute_optimal") or {}).get("isoflop") or {}).get("budgets")
    if not budgets:
        raise _NoFigure("the fit has no IsoFLOP budgets (the sweep does not vary N at fixed "
                        "compute)")
    pts = [p for p in _fit_points(data) if p.get("C")]
    logc = np.log10([b["C"] for b in budgets])
    # A point belongs to the nearest budget when within half the gap to the next one (and
    # 0.15 decades at most: token counts are rounded, so C misses the budget slightly).
    gaps = np.diff(np.sort(logc))
    tol = min(0.15, 0.5 * gaps.min()) if len(gaps) else 0.15
    fig, axes = _figure()
    ax = axes[0, 0]
    from matplotlib.colors import LogNorm

    cmap = _cmap(SIZE_CMAP)
    norm = LogNorm(min(b["C"] for b in budgets) / 1.01, max(b["C"] for b in budgets) * 1.01)
    all_n = [p["N"] for p in pts] + [b["N_opt"] for b in budgets]
    for i, b in enumerate(sorted(budgets, key=lambda b: b["C"])):
        color = cmap(norm(b["C"]) * 0.9)  # stop short of viridis' pale yellow end
        mine = [p for p in pts if abs(math.log10(p["C"]) - math.log10(b["C"])) <= tol]
        if mine:
            ax.scatter([p["N"] for p in mine], [p["loss"] for p in mine], color=color, s=28,
                       zorder=3)
        par = b.get("parabola")
        ns = [p["N"] for p in mine] + [b["N_opt"]]
        if par and len(par) == 3:
            x = np.linspace(math.log10(min(ns)) - 0.1, math.log10(max(ns)) + 0.1, 100)
            ax.plot(10 ** x, np.polyval(par, x), color=color, lw=1.5, label=f"C = {b['C']:.2g}")
        ax.scatter([b["N_opt"]], [b.get("loss_min", np.nan)], marker="*", s=140, color=color,
                   edgecolors="#000000", linewidths=0.6, zorder=4,
                   label="parabola minimum" if i == 0 else None)
    ax.set_xscale("log")
    _log_axes(ax, [], [p["loss"] for p in pts])
    ax.set_xlim(min(all_n) / 1.5, max(all_n) * 1.5)
    ax.set_xlabel(_label(_col(data.fit, "n", "params_nonembedding")))
    ax.set_ylabel(_label(_col(data.fit, "loss", "val_loss")))
    ax.set_title("IsoFLOP curves")
    ax.legend(fontsize=8, title="FLOPs budget", title_fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    return fig, ("Loss against model size at fixed training compute, one parabola in log N per "
                 "budget (Hoffmann et al. approach 2); stars mark the fitted minima.")


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as columns of floats (NaN where empty: val_loss on rows without an eval)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            if k is None:
                continue
            try:
                x = float(v) if v not in ("", None) else math.nan
            except ValueError:
                x = math.nan
            cols.setdefault(k, []).append(x)
    return {k: np.asarray(v) for k, v in cols.items()}


def _run_dir(data: SweepData, rec: RunRecord) -> Path | None:
    if not rec.run_dir:
        return None
    p = Path(rec.run_dir)
    # run_dir may be absolute or relative to the sweep dir (or the cwd of the sweep).
    for cand in (p, data.sweep_dir / p, data.sweep_dir / "runs" / p.name):
        if (cand / "metrics.csv").is_file():
            return cand
    return None


def fig_learning_curves(data: SweepData):
    from matplotlib.colors import LogNorm

    n_col = _col(data.fit, "n", "params_nonembedding")
    curves = []
    for rec in data.records:
        d = _run_dir(data, rec)
        if d is None:
            continue
        m = read_metrics(d / "metrics.csv")
        if "tokens" not in m or not len(m["tokens"]):
            continue
        curves.append((rec, m))
    if not curves:
        raise _NoFigure("no run directory with a metrics.csv was found (run_dir missing or "
                        "moved)")
    sizes = [_value(r, n_col) for r, _ in curves]
    known = [s for s in sizes if s]
    norm = LogNorm(min(known), max(max(known), min(known) * 1.01)) if known else None
    cmap = _cmap(SIZE_CMAP)
    fig, axes = _figure(width=7.2)
    ax = axes[0, 0]
    ys = []
    for (rec, m), n in zip(curves, sizes, strict=True):
        color = cmap(norm(n) * 0.9) if norm and n else "#777777"
        ls = "-" if rec.status == "completed" else ":"  # unfinished runs dotted
        tok = m["tokens"]
        if "train_loss" in m:
            ok = np.isfinite(m["train_loss"]) & (tok > 0)
            ax.plot(tok[ok], m["train_loss"][ok], color=color, lw=1.0, alpha=0.75, ls=ls)
            ys += list(m["train_loss"][ok])
        if "val_loss" in m:
            ok = np.isfinite(m["val_loss"]) & (tok > 0)
            ax.scatter(tok[ok], m["val_loss"][ok], color=color, s=14, edgecolors="#000000",
                       linewidths=0.4, zorder=3)
            ys += list(m["val_loss"][ok])
    if norm:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_label(n_col))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="#555555", lw=1.0, label="training loss"),
               Line2D([], [], color="#555555", marker="o", ls="", markeredgecolor="#000000",
                      label="validation loss")]
    if any(rec.status != "completed" for rec, _ in curves):
        handles.insert(1, Line2D([], [], color="#555555", lw=1.0, ls=":",
                                 label="training loss (not completed)"))
    ax.legend(handles=handles, fontsize=8)
    ax.set_xscale("log")
    _log_axes(ax, [], [y for y in ys if np.isfinite(y)])
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"Learning curves ({len(curves)} runs)")
    ax.grid(True, which="both", alpha=0.25)
    return fig, ("Training loss (lines) and validation loss (points) against tokens seen, "
                 "coloured by model size; dotted lines are runs that did not complete.")


# The cost figures: (fit.json cost key, x column expression, y column, y label).
COST_PANELS = (
    ("wall_time_s", "N*D", "wall_time_s", "wall time (seconds)"),
    ("gpu_hours", "N*D", "gpu_hours", "GPU-hours"),
    ("checkpoint_bytes", "N", "checkpoint_bytes", "checkpoint size (bytes)"),
)


def cost_predict(entry: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """A cost law y = k x^p, through the fitter's evaluator."""
    from llmscale.fit.laws import predict_cost

    return np.asarray(predict_cost(entry["params"], x), dtype=float)


def fig_cost(data: SweepData):
    n_col = _col(data.fit, "n", "params_nonembedding")
    cost = (data.fit or {}).get("cost") or {}
    panels = []
    for key, xexpr, ycol, ylabel in COST_PANELS:
        xs, ys = [], []
        for r in _completed(data.records):
            n, d, y = _value(r, n_col), _value(r, "tokens"), _value(r, ycol)
            x = n * d if (xexpr == "N*D" and n and d) else (n if xexpr == "N" else None)
            if x and y and y > 0:  # 0 GPU-hours on CPU: nothing to plot on a log axis
                xs.append(x)
                ys.append(y)
        if xs:
            panels.append((key, xexpr, xs, ys, ylabel))
    if not panels:
        raise _NoFigure("no completed run records wall time, GPU-hours or checkpoint size")
    fig, axes = _figure(ncols=len(panels), width=4.6, height=4.2)
    for ax, (key, xexpr, xs, ys, ylabel) in zip(axes[0], panels, strict=True):
        ax.scatter(xs, ys, color=OKABE_ITO[0], s=28, zorder=3, label="runs")
        entry = cost.get(key)
        if entry and entry.get("params"):
            grid = _grid(xs, 1.3, 3.0)
            p = entry["params"]
            ax.plot(grid, cost_predict(entry, grid), color=OKABE_ITO[1], lw=1.6,
                    label=f"y = {p['k']:.3g} · x^{p['p']:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N·D (parameters × tokens)" if xexpr == "N*D" else _label(n_col))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.25)
        ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle("Cost: measured against size (the S, R, T of P(M) = f(S, R, T))")
    missing = [k for k, *_ in COST_PANELS if k not in {p[0] for p in panels}]
    caption = "Measured cost against size, with the fitted cost laws y = k·x^p."
    if "gpu_hours" in missing:
        caption += " No GPU-hours panel: every run ran without a GPU (0 GPU-hours)."
    return fig, caption


def fig_residuals(data: SweepData):
    laws = {k: v for k, v in fitted_laws(data.fit).items() if v.get("residuals")}
    if not laws:
        raise _NoFigure("no fitted law with residuals")
    n_of = {p["run_id"]: p["N"] for p in _fit_points(data)}
    held = heldout_ids(data.fit)
    names = [k for k in LAW_ORDER if k in laws] + sorted(set(laws) - set(LAW_ORDER))
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, width=4.4, height=3.6)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        law = names[i]
        res = [r for r in laws[law]["residuals"] if r.get("run_id") in n_of]
        color = law_color(law)
        for group, hollow in (([r for r in res if r["run_id"] not in held], False),
                              ([r for r in res if r["run_id"] in held], True)):
            if group:
                ax.scatter([n_of[r["run_id"]] for r in group],
                           [r["log_residual"] for r in group], s=30, zorder=3,
                           facecolors="none" if hollow else color, edgecolors=color,
                           label="held out" if hollow else "fitted")
        ax.axhline(0, color="#000000", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(LAW_LABELS.get(law, law), fontsize=9)
        ax.set_xlabel(_label(_col(data.fit, "n", "params_nonembedding")))
        ax.set_ylabel("log(observed / predicted)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    return fig, ("Residuals of each law in log space (positive: the run did worse than "
                 "predicted); hollow markers are held-out runs.")


FIGURES = (
    ("loss_vs_params", fig_loss_vs_params),
    ("loss_vs_compute", fig_loss_vs_compute),
    ("isoflop", fig_isoflop),
    ("learning_curves", fig_learning_curves),
    ("cost", fig_cost),
    ("residuals", fig_residuals),
)


__all__ = ["make_plots", "plot_cli", "load_sweep", "SweepData", "read_metrics", "heldout_ids",
           "FIGURES"]
