"""Figures of a sweep: records (results.csv, metrics.csv, position_loss.csv) + the typed fit
result (llmscale.fit.result), no fitting.

`make_plots(sweep_dir, data)` draws every figure the data supports as PNG and SVG under
`SWEEP_DIR/plots/`, and writes `plots/plots.json`: for each figure its files and caption,
or the reason it could not be drawn (the report shows both). Law curves come from
`llmscale.fit.laws.predict`, the one place a law's formula lives; which runs were fitted, held
out, on the frontier or in an IsoFLOP budget is read from the fit result, never regrouped here.

Figures are built with the object API (`Figure` + the Agg canvas), not pyplot: no global
figure registry to leak between calls, and a caller's interactive backend is left alone.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from llmscale import layout
from llmscale.analysis import SweepData, kind_of, load_sweep
from llmscale.atomic import atomic_path, atomic_write_text
from llmscale.fit.frontier import allocate
from llmscale.fit.laws import predict, predict_cost
from llmscale.fit.result import FitResult, LawFit
from llmscale.fit.select import frontier
from llmscale.records import RunRecord

DPI = 150  # PNG resolution, dots per inch

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
             "#000000")
SIZE_CMAP = "viridis"  # continuous size colouring: perceptually uniform, cb-safe
KIND_STYLES = {"lstm": "-", "gru": "--", "transformer": ":"}

# The laws in a fixed order, so a law keeps its colour across figures and sweeps.
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


# --------------------------------------------------------------------------- entry point


def make_plots(sweep_dir: Path, data: SweepData | None = None,
               formats: tuple[str, ...] = ("png", "svg")) -> dict[str, dict[str, Any]]:
    """Draw every figure the sweep supports; returns (and writes) the manifest: per figure its
    files and caption, or why it is missing."""
    import json

    data = data or load_sweep(Path(sweep_dir), refit=False)
    out = layout.plots_dir(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, Any]] = {}
    for name, draw in FIGURES:
        try:
            fig, caption = draw(data)
        except _NoFigure as why:
            for ext in ("png", "svg"):  # a figure that cannot be drawn now must not linger
                (out / f"{name}.{ext}").unlink(missing_ok=True)
            manifest[name] = {"files": [], "missing": str(why)}
            continue
        paths = _save(fig, out / name, formats)
        manifest[name] = {"files": [p.name for p in paths], "caption": caption}
    atomic_write_text(out / layout.PLOTS_MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


class _NoFigure(Exception):
    """A figure the data does not support; the message says why (shown in the report)."""


def _save(fig, stem: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Each format written through the one atomic write (a reader never sees half a file)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    for ax in fig.axes:
        _tidy_log_x(ax)
    paths = []
    for ext in formats:
        path = stem.with_suffix(f".{ext}")
        # No date in the metadata: the same data gives byte-identical files.
        meta = {"Date": None} if ext == "svg" else {"Software": "llmscale"}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI, metadata=meta)
        paths.append(path)
        # The first save placed the axes (constrained layout: about half of a save's time);
        # the other formats draw the same figure at those places instead of solving it again.
        fig.set_layout_engine("none")
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


def _label(column: str) -> str:
    return COLUMN_LABELS.get(column, column)


def _n_col(data: SweepData) -> str:
    return data.fit.n_column if data.fit else "params_nonembedding"


def _l_col(data: SweepData) -> str:
    return data.fit.loss_column if data.fit else "val_loss"


def _value(rec: RunRecord, column: str) -> float | None:
    v = getattr(rec, column, None)
    if v is None or isinstance(v, (str, bool)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _completed(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.status == "completed"]


def _laws(fit: FitResult | None, inputs: tuple[str, ...] | None = None) -> dict[str, LawFit]:
    if fit is None:
        return {}
    return {k: v for k, v in fit.laws.items() if inputs is None or v.inputs == inputs}


def _held(fit: FitResult | None) -> set[str]:
    return set(fit.heldout_run_ids) if fit else set()


def _grid(values, lo_pad: float = 1.5, hi_pad: float = 3.0, n: int = 200) -> np.ndarray:
    v = np.asarray([x for x in values if x and x > 0], dtype=float)
    return np.logspace(math.log10(v.min() / lo_pad), math.log10(v.max() * hi_pad), n)


def _band(entry: LawFit, **inputs) -> tuple[np.ndarray, np.ndarray] | None:
    """Percentile band of the bootstrap samples' predictions (None without samples)."""
    samples = entry.finite_samples
    if len(samples) < 2:
        return None
    with np.errstate(all="ignore"):
        preds = np.stack([predict(entry.law, s, **inputs) for s in samples])
    preds[~np.isfinite(preds) | (preds <= 0)] = np.nan  # log axes: a non-positive loss is off-plot
    q = 100 * (1 - entry.ci_level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column stays NaN
        lo, hi = np.nanpercentile(preds, [q, 100 - q], axis=0)
    return lo, hi


def _positive(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float).copy()
    y[~np.isfinite(y) | (y <= 0)] = np.nan
    return y


def _floor(data: SweepData) -> float | None:
    """The synthetic source's entropy rate in the loss's units, if known."""
    return data.fit.floor_in_loss_units() if data.fit else None


def _fit_points(data: SweepData) -> list[dict[str, Any]]:
    """The fitted points; without a fit, every completed run with N and a loss."""
    if data.fit:
        return [{"run_id": p.run_id, "N": p.N, "D": p.D, "C": p.C, "loss": p.loss}
                for p in data.fit.points]
    n_col, l_col = _n_col(data), _l_col(data)
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
    fit = data.fit
    n_col, l_col = _n_col(data), _l_col(data)
    held = _held(fit)
    fig, axes = _figure()
    ax = axes[0, 0]
    n_laws = _laws(fit, ("N",))
    used = set().union(*(e.fitted_run_ids for e in n_laws.values())) if n_laws else None
    if used is not None and len(used) < len(pts):
        # A sweep that also varies D: the laws of N describe the largest D; the other runs
        # are shown for context, in grey.
        others = [p for p in pts if p["run_id"] not in used | held]
        ax.scatter([p["N"] for p in others], [p["loss"] for p in others], s=18,
                   color="#BBBBBB", zorder=2, label="runs at other D (not in L(N))")
        pts_n = [p for p in pts if p["run_id"] in used | held]
    else:
        pts_n = pts
    _scatter_points(ax, pts_n, held, "N", "#000000", "runs (fitted)")
    grid = _grid([p["N"] for p in pts])
    drawn = []
    for law in LAW_ORDER:
        entry = n_laws.get(law)
        if entry is None:
            continue
        color = law_color(law)
        err = entry.heldout.mean_abs_rel_err
        label = LAW_LABELS.get(law, law) + (f"  (held-out err {100 * err:.1f}%)"
                                            if err is not None else "")
        ax.plot(grid, _positive(predict(law, entry.params, N=grid)), color=color, lw=1.8,
                label=label, ls="-." if law == "linear" else "-")
        band = _band(entry, N=grid)
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
    level = next((n_laws[k].ci_level for k in drawn), 0.95)
    what = next((n_laws[k].describes for k in drawn), "")
    caption = (f"{_label(l_col)} against {_label(n_col)}, log-log. Lines: fitted laws of N "
               f"({', '.join(drawn) or 'none fitted'}{'; ' + what if what else ''}); shaded: "
               f"{100 * level:.0f}% bootstrap band; hollow markers: the held-out runs (the "
               "largest compute), which no law was fitted to.")
    return fig, caption


def fig_loss_vs_compute(data: SweepData):
    fit = data.fit
    l_col, n_col = _l_col(data), _n_col(data)
    runs = [(r, _value(r, "flops"), _value(r, l_col), _value(r, n_col))
            for r in _completed(data.records)]
    runs = [(r, c, loss, n) for r, c, loss, n in runs if c and loss is not None]
    if not runs:
        raise _NoFigure("no completed run has both FLOPs and a loss")
    from matplotlib.colors import LogNorm

    co = fit.compute_optimal if fit else None
    two = bool(co and (co.chinchilla or co.isoflop))
    fig, axes = _figure(ncols=2 if two else 1)
    ax = axes[0, 0]
    cs = np.array([c for _, c, _, _ in runs])
    ls = np.array([loss for _, _, loss, _ in runs])
    ns = np.array([n if n else np.nan for _, _, _, n in runs])
    if np.isfinite(ns).any():
        norm = LogNorm(np.nanmin(ns), max(np.nanmax(ns), np.nanmin(ns) * 1.01))
        sc = ax.scatter(cs, ls, c=ns, cmap=SIZE_CMAP, norm=norm, s=28, zorder=3, label="runs")
        fig.colorbar(sc, ax=ax, label=_label(n_col))
    else:
        ax.scatter(cs, ls, color=OKABE_ITO[0], s=28, zorder=3, label="runs")
    # The frontier: the fitter's, when there is a fit (the same runs the compute law saw).
    if fit:
        on = {p.run_id: (p.C, p.loss) for p in fit.points}
        fr = sorted(on[i] for i in fit.frontier_run_ids if i in on)
    else:
        idx = frontier(cs, ls)
        fr = sorted(zip(cs[idx], ls[idx], strict=True))
    if fr:
        ax.step([c for c, _ in fr], [v for _, v in fr], where="post", color="#000000", lw=1.2,
                label="frontier (lowest loss so far)")
    grid = _grid(cs, 1.5, 10.0)
    entry = fit.laws.get("compute") if fit else None
    if entry:
        ax.plot(grid, _positive(predict("compute", entry.params, C=grid)),
                color=law_color("compute"), lw=1.8, label=LAW_LABELS["compute"])
        band = _band(entry, C=grid)
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color=law_color("compute"), alpha=0.18, lw=0)
    n_opt = None
    if co and co.chinchilla and fit.laws.get("chinchilla"):
        n_opt, d_opt = allocate(co.chinchilla, grid)
        ax.plot(grid, _positive(predict("chinchilla", fit.laws["chinchilla"].params, N=n_opt,
                                        D=d_opt)),
                color=law_color("chinchilla"), lw=1.8, ls="--",
                label="compute-optimal (Chinchilla fit)")
    floor = _floor(data)
    if floor:
        ax.axhline(floor, color="#555555", ls="--", lw=1.0, label=f"entropy floor ({floor:.3g})")
    ax.set_xscale("log")
    _log_axes(ax, [], ls)
    # The runs set the view: a wide bootstrap band at the edge must not flatten them.
    lo = min(list(ls) + ([floor] if floor else []))
    if ax.get_yscale() == "log":
        ax.set_ylim(lo / 1.2, max(ls) * 1.2)
    else:
        ax.set_ylim(lo - 0.1 * np.ptp(ls) - 0.05 * abs(lo),
                    max(ls) + 0.1 * np.ptp(ls) + 0.05 * abs(max(ls)))
    ax.set_xlabel(_label("flops"))
    ax.set_ylabel(_label(l_col))
    ax.set_title("Loss vs compute")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    if two:
        _draw_allocation(axes[0, 1], co, grid, n_opt)
    return fig, ("Loss against training compute, coloured by model size; the step line is the "
                 "fitter's frontier. Right: the compute-optimal model size N_opt(C) from the "
                 "Chinchilla fit (shaded: its bootstrap interval) and the IsoFLOP minima.")


def _draw_allocation(ax, co, grid: np.ndarray, n_opt) -> None:
    ch = co.chinchilla
    if n_opt is not None:
        ax.plot(grid, n_opt, color=law_color("chinchilla"), lw=1.8,
                label=f"Chinchilla fit: N_opt ∝ C^{ch.a:.2f}")
        if len(ch.samples) >= 2:
            ns = np.stack([allocate(ch, grid, s)[0] for s in ch.samples])
            lo, hi = np.percentile(ns, [2.5, 97.5], axis=0)
            ax.fill_between(grid, lo, hi, color=law_color("chinchilla"), alpha=0.18, lw=0)
    if co.isoflop:
        a = co.isoflop.a
        ax.scatter([b.C for b in co.isoflop.budgets], [b.N_opt for b in co.isoflop.budgets],
                   marker="D", s=40, color=OKABE_ITO[1], zorder=3,
                   label="IsoFLOP minima" + (f" (N_opt ∝ C^{a:.2f})" if a is not None else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_label("flops"))
    ax.set_ylabel("compute-optimal parameters N_opt")
    ax.set_title("Compute-optimal model size")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)


def fig_isoflop(data: SweepData):
    iso = data.fit.compute_optimal.isoflop if data.fit else None
    if iso is None:
        raise _NoFigure("the fit has no IsoFLOP budgets (the sweep does not vary N at fixed "
                        "compute)")
    if not iso.budgets:
        raise _NoFigure(f"no IsoFLOP budget's parabola has a minimum: {iso.why_not}")
    by_id = {p.run_id: p for p in data.fit.points}
    fig, axes = _figure()
    ax = axes[0, 0]
    from matplotlib.colors import LogNorm

    cmap = _cmap(SIZE_CMAP)
    norm = LogNorm(min(b.C for b in iso.budgets) / 1.01, max(b.C for b in iso.budgets) * 1.01)
    all_n, all_l = [], []
    for i, b in enumerate(sorted(iso.budgets, key=lambda b: b.C)):
        color = cmap(norm(b.C) * 0.9)  # stop short of viridis' pale yellow end
        mine = [by_id[r] for r in b.run_ids if r in by_id]  # the fitter's grouping, not ours
        ax.scatter([p.N for p in mine], [p.loss for p in mine], color=color, s=28, zorder=3)
        ns = [p.N for p in mine] + [b.N_opt]
        all_n += ns
        all_l += [p.loss for p in mine]
        x = np.linspace(math.log10(min(ns)) - 0.1, math.log10(max(ns)) + 0.1, 100)
        ax.plot(10 ** x, np.polyval(b.parabola, x), color=color, lw=1.5, label=f"C = {b.C:.2g}")
        ax.scatter([b.N_opt], [b.loss_min], marker="*", s=140, color=color,
                   edgecolors="#000000", linewidths=0.6, zorder=4,
                   label="parabola minimum" if i == 0 else None)
    ax.set_xscale("log")
    _log_axes(ax, [], all_l)
    ax.set_xlim(min(all_n) / 1.5, max(all_n) * 1.5)
    ax.set_xlabel(_label(_n_col(data)))
    ax.set_ylabel(_label(_l_col(data)))
    ax.set_title("IsoFLOP curves")
    ax.legend(fontsize=8, title="FLOPs budget", title_fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    return fig, ("Loss against model size at fixed training compute, one parabola in log N per "
                 "budget (Hoffmann et al. approach 2); stars mark the fitted minima. "
                 + (f"No IsoFLOP exponent is stated: {iso.why_not}." if iso.why_not else
                    f"Over the budgets N_opt ∝ C^{iso.a:.2f} and D_opt ∝ C^{iso.b:.2f} (every "
                    "minimum lies inside its budget's sizes)."))


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
    for cand in (p, data.sweep_dir / p, data.sweep_dir / layout.RUNS_DIR / p.name):
        if (cand / layout.METRICS_FILE).is_file() or (cand / layout.POSITION_LOSS_FILE).is_file():
            return cand
    return None


def fig_learning_curves(data: SweepData):
    from matplotlib.colors import LogNorm

    n_col = _n_col(data)
    curves = []
    for rec in data.records:
        d = _run_dir(data, rec)
        if d is None:
            continue
        if not (d / layout.METRICS_FILE).is_file():
            continue
        m = read_metrics(d / layout.METRICS_FILE)
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


def fig_cost(data: SweepData):
    n_col = _n_col(data)
    cost = data.fit.cost if data.fit else {}
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
        if entry:
            grid = _grid(xs, 1.3, 3.0)
            p = entry.params
            ax.plot(grid, predict_cost(p, grid), color=OKABE_ITO[1], lw=1.6,
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
    caption = "Measured cost against size, with the fitted cost laws y = k·x^p (robust fit)."
    if "gpu_hours" in missing:
        caption += " No GPU-hours panel: every run ran without a GPU (0 GPU-hours)."
    return fig, caption


def fig_residuals(data: SweepData):
    laws = {k: v for k, v in _laws(data.fit).items() if v.residuals}
    if not laws:
        raise _NoFigure("no fitted law with residuals")
    n_of = {p["run_id"]: p["N"] for p in _fit_points(data)}
    names = [k for k in LAW_ORDER if k in laws] + sorted(set(laws) - set(LAW_ORDER))
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, width=4.4, height=3.6)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        entry = laws[names[i]]
        color = law_color(entry.law)
        res = [r for r in entry.residuals if r.run_id in n_of and r.log_residual is not None]
        if res:
            ax.scatter([n_of[r.run_id] for r in res], [r.log_residual for r in res], s=30,
                       zorder=3, color=color, label="fitted (all points)")
        h = entry.heldout
        held = [(n_of[r], e) for r, e in zip(h.run_ids, h.errors, strict=False) if r in n_of]
        if held:
            ax.scatter([n for n, _ in held], [0.0] * len(held), s=0)  # keep them in view
        ax.axhline(0, color="#000000", lw=0.8)
        ax.set_xscale("log")
        err = h.mean_abs_rel_err
        ax.set_title(LAW_LABELS.get(entry.law, entry.law)
                     + (f"\nheld-out mean |err| {100 * err:.2f}%" if err is not None else ""),
                     fontsize=9)
        ax.set_xlabel(_label(_n_col(data)))
        ax.set_ylabel("log(observed / predicted)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    return fig, ("Residuals of each law in log space on the points it was fitted to (positive: "
                 "the run did worse than predicted); the title gives its error on the held-out "
                 "runs (the largest compute), the same runs for every law.")


def fig_position_loss(data: SweepData):
    """Loss against token position by kind and size (Kaplan et al. 2020, Figure 20)."""
    curves = []
    for rec in _completed(data.records):
        d = _run_dir(data, rec)
        if d is None or not (d / layout.POSITION_LOSS_FILE).is_file():
            continue
        m = read_metrics(d / layout.POSITION_LOSS_FILE)
        if "position" in m and "loss" in m and len(m["position"]):
            curves.append((rec, m))
    if not curves:
        raise _NoFigure(f"no run directory has a {layout.POSITION_LOSS_FILE}")
    from matplotlib.colors import LogNorm

    n_col = _n_col(data)
    sizes = [_value(r, n_col) or 1.0 for r, _ in curves]
    norm = LogNorm(min(sizes), max(max(sizes), min(sizes) * 1.01))
    cmap = _cmap(SIZE_CMAP)
    fig, axes = _figure(width=7.2)
    ax = axes[0, 0]
    kinds = sorted({kind_of(r) for r, _ in curves})
    for (rec, m), n in zip(curves, sizes, strict=True):
        x, y = _log_bins(m["position"], m["loss"])
        ax.plot(x, y, color=cmap(norm(n) * 0.9), lw=1.2, marker=".", ms=4,
                ls=KIND_STYLES.get(kind_of(rec), "-."))
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_label(n_col))
    ax.legend(handles=[Line2D([], [], color="#555555", ls=KIND_STYLES.get(k, "-."), label=k)
                       for k in kinds], fontsize=8, title="model kind", title_fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("token position in the context")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Loss by token position")
    ax.grid(True, which="both", alpha=0.25)
    return fig, ("Per-token validation loss against position in the context (for recurrent "
                 "models: distance from the last state reset), by model kind (line style) and "
                 "size (colour), as in Kaplan et al. 2020, Figure 20. Each point is the mean "
                 "over a log-spaced bin of positions (1, 2, 3-4, 5-8, ...): one position's "
                 "loss is a mean over few windows and jitters.")


def _log_bins(position: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss over positions 1, 2, 3-4, 5-8, ..., each at its bin's geometric centre."""
    ok = np.isfinite(loss) & (position >= 1)
    position, loss = position[ok], loss[ok]
    if not len(position):
        return position, loss
    edges = [0.5, 1.5] + [2.0 ** k + 0.5 for k in range(1, int(np.log2(position.max())) + 2)]
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (position > lo) & (position <= hi)
        if sel.any():
            xs.append(float(np.sqrt(position[sel].min() * position[sel].max())))
            ys.append(float(loss[sel].mean()))
    return np.asarray(xs), np.asarray(ys)


def fig_kinds(data: SweepData):
    """One compute law per model kind, side by side, with where the curves cross."""
    groups = data.fit.groups if data.fit else {}
    if len(groups) < 2:
        raise _NoFigure("the sweep holds one model kind")
    fig, axes = _figure()
    ax = axes[0, 0]
    for i, (kind, g) in enumerate(sorted(groups.items())):
        color = OKABE_ITO[i % len(OKABE_ITO)]
        pts = [p for p in g.points if p.C]
        ax.scatter([p.C for p in pts], [p.loss for p in pts], s=20, color=color, zorder=3,
                   label=f"{kind} runs")
        entry = g.laws.get("compute")
        if entry and pts:
            grid = _grid([p.C for p in pts], 1.5, 10.0)
            ax.plot(grid, _positive(predict("compute", entry.params, C=grid)), color=color,
                    lw=1.6, ls=KIND_STYLES.get(kind, "-."), label=f"{kind}: L(C)")
    cs = [p.C for g in groups.values() for p in g.points if p.C]
    lo, hi = min(cs) / 2, max(cs) * 10  # the view the curves are drawn on
    for c in data.fit.crossings:
        # only crossings in view: one far outside (two kinds almost parallel) would flatten it
        if c.law == "compute" and c.at is not None and lo <= c.at <= hi:
            ax.axvline(c.at, color="#777777", lw=0.8, ls=":")
            ax.annotate(f"{c.kinds[0]} = {c.kinds[1]}", (c.at, 0.02), xycoords=("data",
                        "axes fraction"), rotation=90, fontsize=7, color="#555555")
            if c.interval:
                ax.axvspan(max(lo, c.interval[0]), min(hi, c.interval[1]), color="#999999",
                           alpha=0.12, lw=0)
    ax.set_xlim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_label("flops"))
    ax.set_ylabel(_label(_l_col(data)))
    ax.set_title("Model kinds: loss vs compute")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    return fig, ("Each model kind's runs and its own compute law L(C); the dotted line and the "
                 "shaded band mark where two kinds' curves cross, with its bootstrap interval.")


FIGURES = (
    ("loss_vs_params", fig_loss_vs_params),
    ("loss_vs_compute", fig_loss_vs_compute),
    ("isoflop", fig_isoflop),
    ("learning_curves", fig_learning_curves),
    ("cost", fig_cost),
    ("residuals", fig_residuals),
    ("position_loss", fig_position_loss),
    ("kinds", fig_kinds),
)
