"""The sweep report: SWEEP_DIR/report.md and a self-contained SWEEP_DIR/report.html.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and
rendered twice, so the Markdown and the HTML always say the same thing. The HTML page
embeds its figures as base64 PNG data URIs and its CSS inline: it can be mailed or
attached to a ticket as one file, and it fetches nothing.

Every number is read from results.csv and fit.json; nothing here fits or recomputes.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmscale import layout
from llmscale.analysis import SweepData, load_sweep
from llmscale.atomic import atomic_write_text
from llmscale.fit.frontier import allocation_interval
from llmscale.fit.guard import law_warnings, plan_budget
from llmscale.fit.result import FitResult, LawFit
from llmscale.plots import LAW_LABELS, LAW_ORDER, make_plots

# What each law needs from the data, said when a law is missing and the fitter gave no reason.
LAW_NEEDS = {
    "linear": "at least 2 distinct model sizes N at the largest D",
    "power": "at least 2 distinct model sizes N at the largest D",
    "saturating": "at least 3 distinct model sizes N at the largest D",
    "chinchilla": "several model sizes N and several token counts D",
    "compute": "completed runs spread over several compute budgets C",
}


@dataclass(frozen=True)
class Block:
    kind: str  # h1 | h2 | p | table | figure | list
    text: str = ""  # heading or paragraph text; figure caption
    rows: tuple = ()  # table: (header, *rows); list: items
    figure: str = ""  # figure name in plots/plots.json


# --------------------------------------------------------------------------- entry point


def write_report(sweep_dir: Path, data: SweepData | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html from the records, the fit result and the figures
    (drawn first when plots.json is missing or older than results.csv or fit.json)."""
    sweep_dir = Path(sweep_dir)
    data = data or load_sweep(sweep_dir, refit=False)
    man = layout.plots_dir(sweep_dir) / layout.PLOTS_MANIFEST
    if _plots_stale(sweep_dir):
        manifest = make_plots(sweep_dir, data)
    else:
        manifest = json.loads(man.read_text(encoding="utf-8"))
    blocks = report_blocks(data, manifest)
    md, page = sweep_dir / layout.REPORT_MD, sweep_dir / layout.REPORT_HTML
    atomic_write_text(md, render_markdown(blocks, manifest))
    atomic_write_text(page, render_html(blocks, manifest, layout.plots_dir(sweep_dir)))
    return md, page


def _plots_stale(sweep_dir: Path) -> bool:
    man = layout.plots_dir(sweep_dir) / layout.PLOTS_MANIFEST
    if not man.is_file():
        return True
    inputs = [layout.results_path(sweep_dir), layout.fit_path(sweep_dir)]
    newest = max(p.stat().st_mtime for p in inputs if p.is_file())
    return man.stat().st_mtime < newest


# --------------------------------------------------------------------------- content


def report_blocks(data: SweepData, manifest: dict[str, Any]) -> list[Block]:
    fit = data.fit
    name = next((r.sweep for r in data.records if r.sweep), data.sweep_dir.name)
    b: list[Block] = [Block("h1", f"Scaling report: {name}")]
    if data.fit_note:
        b.append(Block("p", f"Note: {data.fit_note}."))
    b += _summary(data)
    b += _laws(data)
    b += _founding(fit, data.fit_note)
    b += _compute_optimal(fit)
    b += _kinds(fit)
    b += _cost(data)
    b += _floor(fit)
    b += [Block("h2", "Training"), Block("figure", figure="learning_curves"),
          Block("figure", figure="position_loss")]
    b += _results_table(data)
    b += _skipped(data)
    return b


def fmt(v: Any, digits: int = 3) -> str:
    """A number for people: 3 significant digits, scientific beyond 1e5 or below 1e-3."""
    if v is None:
        return "–"
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if isinstance(v, int) and abs(v) < 100_000:
        return str(v)
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}%"


def _summary(data: SweepData) -> list[Block]:
    recs = data.records
    status = Counter(r.status for r in recs)
    devices = Counter((f"{r.gpu_count} × " if r.gpu_count else "") + (r.device_name or "unknown")
                      for r in recs if r.device_name or r.gpu_count is not None)

    def total(col):
        vals = [getattr(r, col) for r in recs if getattr(r, col, None) is not None]
        return (sum(vals), len(vals)) if vals else (None, 0)

    gpu_h, n_gh = total("gpu_hours")
    wall, n_w = total("wall_time_s")
    tokens, _ = total("tokens")
    flops, _ = total("flops")
    rows = [("runs", f"{len(recs)} ({', '.join(f'{k}: {v}' for k, v in status.most_common())})"),
            ("devices", ", ".join(f"{k} ({v} runs)" for k, v in devices.most_common()) or "–"),
            ("total GPU-hours", fmt(gpu_h) + (f" (from {n_gh} runs)" if n_gh < len(recs) else "")),
            ("total wall time", (f"{fmt(wall)} s ({fmt(wall / 3600)} h)" if wall is not None
                                 else "–") + (f" (from {n_w} runs)" if n_w < len(recs) else "")),
            ("training tokens", fmt(tokens)), ("training compute", f"{fmt(flops)} FLOPs")]
    fit = data.fit
    if fit:
        rows += [("fitted on", f"{len(fit.points)} points: loss column `{fit.loss_column}`, "
                               f"N column `{fit.n_column}`, several runs per shape reduced by "
                               f"`{fit.reduce}`")]
    out = [Block("h2", "Sweep summary"), Block("table", rows=(("quantity", "value"), *rows))]
    if fit and fit.notes:
        out += [Block("p", "Notes from the fit:"), Block("list", rows=tuple(fit.notes))]
    if data.problems:
        out += [Block("p", f"{len(data.problems)} rows of results.csv could not be read and are "
                           "left out:"), Block("list", rows=tuple(data.problems))]
    return out


def _param_ci(entry: LawFit) -> str:
    parts = []
    for k, v in entry.params.items():
        iv = entry.intervals.get(k)
        parts.append(f"{k} = {fmt(v)}" + (f" [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else ""))
    return "; ".join(parts)


def _ordered(fit: FitResult) -> list[str]:
    return [k for k in LAW_ORDER if k in fit.laws] + sorted(set(fit.laws) - set(LAW_ORDER))


def _laws(data: SweepData) -> list[Block]:
    fit = data.fit
    out = [Block("h2", "Scaling laws")]
    if fit is None:
        return out + [Block("p", _sentence(data.fit_note or "no fit: fit.json is missing"))]
    level = next((e.ci_level for e in fit.laws.values()), 0.95)
    rows = []
    for law in _ordered(fit):
        e = fit.laws[law]
        h = e.heldout
        rows.append((LAW_LABELS.get(law, law), e.describes, _param_ci(e),
                     _pct(h.mean_abs_rel_err), _pct(h.max_abs_rel_err),
                     f"{h.n_fit} / {len(h.run_ids)}" if h.mean_abs_rel_err is not None
                     else f"none held out: {h.reason}",
                     "reliable" if not law_warnings(fit, e) else "not reliable"))
    if rows:
        out.append(Block("p", f"Parameters with {100 * level:.0f}% bootstrap intervals (runs "
                              "resampled before the best-per-shape selection). Every law is "
                              f"scored on the same held-out runs, {fit.heldout_rule}: "
                              + (", ".join(fit.heldout_run_ids) or "none") + "."))
        out.append(Block("table", rows=(("law", "describes", f"parameters [{100 * level:.0f}% CI]",
                                         "held-out mean |err|", "held-out max |err|",
                                         "points fitted / held out", "verdict"), *rows)))
    reliable = [k for k in fit.ranking if fit.laws[k].reliable]
    unreliable = [k for k in fit.ranking if not fit.laws[k].reliable]
    if reliable:
        out.append(Block("p", "Ranking of the reliable laws by held-out error on those runs, "
                              "best first: " + " > ".join(reliable) + "."))
    if unreliable:
        out.append(Block("p", ("Ranked after them, whatever their held-out error, the laws "
                               if reliable else "No law is reliable; by held-out error: ")
                              + "; ".join(f"{k} (not reliable: {fit.laws[k].warnings[0]})"
                                          for k in unreliable) + "."))
    why = [w for law in _ordered(fit) for w in law_warnings(fit, fit.laws[law])]
    if why:
        out += [Block("p", "Why a law is marked not reliable:"), Block("list", rows=tuple(why))]
    missing = [k for k in LAW_ORDER if k not in fit.laws]
    if missing:
        out.append(Block("p", "Not fitted:"))
        out.append(Block("list", rows=tuple(f"{k}: {_why_missing(k, fit)}" for k in missing)))
    out += [Block("figure", figure="loss_vs_params"), Block("figure", figure="residuals")]
    return out


def _why_missing(law: str, fit: FitResult) -> str:
    """The fitter's reason, else what the data lacks."""
    if law in fit.not_fitted:
        return fit.not_fitted[law]
    return f"not requested; it needs {LAW_NEEDS.get(law, 'more data')}"


def _founding(fit: FitResult | None, fit_note: str) -> list[Block]:
    out = [Block("h2", "The founding linear model P(M) = aM + b against the power laws")]
    if fit is None:
        return out + [Block("p", _sentence(fit_note or "no fit: fit.json is missing"))]
    lin = fit.laws.get("linear")
    if lin is None:
        return out + [Block("p", "The linear model was not fitted: "
                                 + _why_missing("linear", fit) + ".")]
    err = lin.heldout.mean_abs_rel_err
    text = (f"Fitted: L = {fmt(lin.params['a'])}·N + {fmt(lin.params['b'])}, held-out error "
            + (f"{_pct(err)}." if err is not None else
               f"not measured: {lin.heldout.reason}."))
    others = [(k, fit.laws[k].heldout.mean_abs_rel_err)
              for k in ("power", "saturating", "chinchilla") if k in fit.laws]
    others = [(k, e) for k, e in others if e is not None]
    if others and err is not None:
        best, best_err = min(others, key=lambda t: t[1])
        if best_err < err:
            text += (f" The best power law ({best}, {_pct(best_err)}) predicts the held-out "
                     f"runs {err / best_err:.1f}× better than the linear model.")
        else:
            text += (f" On these runs the linear model predicts the held-out runs as well as "
                     f"the best power law ({best}, {_pct(best_err)}): the sizes span too "
                     "little for curvature to show.")
    rows = [(LAW_LABELS.get(k, k), _pct(fit.laws[k].heldout.mean_abs_rel_err),
             _pct(fit.laws[k].heldout.max_abs_rel_err))
            for k in LAW_ORDER if k in fit.laws and k != "compute"]
    out += [Block("p", text + " Its line is the dash-dotted one on the loss-vs-N figure above."),
            Block("table", rows=(("law", "held-out mean |err|", "held-out max |err|"), *rows))]
    return out


def _compute_optimal(fit: FitResult | None) -> list[Block]:
    out = [Block("h2", "Compute-optimal allocation")]
    ch = fit.compute_optimal.chinchilla if fit else None
    iso = fit.compute_optimal.isoflop if fit else None
    if ch:
        iv = ch.intervals
        out.append(Block("p", f"From the Chinchilla fit: N_opt = G·(C/q)^a, D_opt = C / (q·N_opt^r) "
                              f"with a = {fmt(ch.a)}" + (f" [{fmt(iv['a'][0])}, {fmt(iv['a'][1])}]"
                                                         if "a" in iv else "")
                              + f", b = {fmt(ch.b)}" + (f" [{fmt(iv['b'][0])}, {fmt(iv['b'][1])}]"
                                                        if "b" in iv else "")
                              + f", G = {fmt(ch.G)}; FLOPs per token = {fmt(ch.q)}·N^{fmt(ch.r)} "
                                "from the runs' own records."))
        out += _planner_table(fit)
    if iso:
        if iso.why_not:  # an exponent through minima the sizes do not bracket means nothing
            out.append(Block("p", f"No IsoFLOP exponent is stated (not reliable): {iso.why_not}."))
        else:
            out.append(Block("p", f"From IsoFLOP parabolas: N_opt ∝ C^{fmt(iso.a)}, "
                                  f"D_opt ∝ C^{fmt(iso.b)} (every budget's minimum lies inside "
                                  "its sizes)."))
        rows = []
        for x in iso.budgets:
            nd = allocation_interval(ch, x.C) if ch else None
            agree = ("–" if nd is None else "yes" if nd[0][0] <= x.N_opt <= nd[0][1] else "no")
            rows.append((fmt(x.C), fmt(x.N_opt), "yes" if x.inside else "no, extrapolated",
                         fmt(x.D_opt), fmt(x.loss_min),
                         f"[{fmt(nd[0][0])}, {fmt(nd[0][1])}]" if nd else "–", agree))
        out.append(Block("table", rows=(("budget C (FLOPs)", "IsoFLOP N_opt (params)",
                                         "minimum inside its sizes", "D_opt (tokens)",
                                         "loss at minimum", "Chinchilla N_opt 95% interval",
                                         "agree"), *rows)))
    if not ch and not iso:
        out.append(Block("p", "No compute-optimal allocation: it needs the Chinchilla law "
                              "(several N and several D, positive exponents) or IsoFLOP budgets "
                              "(several N at each of several fixed compute budgets)."))
    return out + [Block("figure", figure="loss_vs_compute"), Block("figure", figure="isoflop")]


def _planner_table(fit: FitResult) -> list[Block]:
    """The budget planner at the sweep's largest compute and 10x, 100x, 1000x beyond it."""
    c_max = fit.extent.C
    if not c_max:
        return []
    rows, warn = [], []
    known = set(law_warnings(fit, fit.laws["chinchilla"]))  # listed with the laws above
    for factor in (1, 10, 100, 1000):
        r = plan_budget(fit, flops=c_max * factor)
        ni, ci = r.N_opt_interval, r.interval
        rows.append((fmt(r.inputs["C"]), f"{fmt(r.inputs['N'])}" + (
            f" [{fmt(ni[0])}, {fmt(ni[1])}]" if ni else ""), fmt(r.inputs["D"]),
            f"{fmt(r.loss, 4)}" + (f" [{fmt(ci[0], 4)}, {fmt(ci[1], 4)}]" if ci else ""),
            f"{factor}×", "reliable" if r.reliable else "not reliable"))
        warn += [f"C = {fmt(r.inputs['C'])}: {w}" for w in r.warnings if w not in known]
    out = [Block("p", "The budget planner (`llmscale predict --budget-flops C`) at the sweep's "
                      "largest compute and beyond, with 95% bootstrap intervals:"),
           Block("table", rows=(("C (FLOPs)", "N_opt [95%]", "D_opt (tokens)",
                                 "predicted loss [95%]", "× largest C", "verdict"), *rows))]
    if known or warn:
        out += [Block("p", "Not reliable, because:"),
                Block("list", rows=tuple(sorted(known)) + tuple(warn))]
    return out


def _kinds(fit: FitResult | None) -> list[Block]:
    if fit is None or len(fit.groups) < 2:
        return []
    kinds = sorted(fit.groups)
    laws = [k for k in LAW_ORDER if any(k in fit.groups[g].laws for g in kinds)]
    rows = []
    for law in laws:
        cells = [LAW_LABELS.get(law, law)]
        for g in kinds:
            e = fit.groups[g].laws.get(law)
            cells.append(_exponents(e) if e else "not fitted")
        rows.append(tuple(cells))
    out = [Block("h2", "Model kinds side by side"),
           Block("p", "One fit per model kind (exponents with 95% bootstrap intervals; held-out "
                      "error on each kind's own largest-compute runs)."),
           Block("table", rows=(("law", *kinds), *rows))]
    cross = []
    for c in fit.crossings:
        where = ("no crossing within 1000× of the data" if c.at is None else
                 f"{c.input} = {fmt(c.at)}" + (f" [{fmt(c.interval[0])}, {fmt(c.interval[1])}]"
                                               if c.interval else ""))
        cross.append((LAW_LABELS.get(c.law, c.law), f"{c.kinds[0]} vs {c.kinds[1]}", where,
                      f"{100 * c.fraction:.0f}%"))
    if cross:
        out.append(Block("table", rows=(("law", "kinds", "curves cross at [95%]",
                                         "bootstrap pairs that cross"), *cross)))
    return out + [Block("figure", figure="kinds")]


def _exponents(e: LawFit) -> str:
    names = [k for k in e.params if k in ("alpha", "beta", "gamma", "E")]
    err = e.heldout.mean_abs_rel_err
    return "; ".join(f"{k} = {fmt(e.params[k])}" + (
        f" [{fmt(e.intervals[k][0])}, {fmt(e.intervals[k][1])}]" if k in e.intervals else "")
                     for k in names) + (f"; held-out {_pct(err)}" if err is not None else "")


COST_LABELS = {"wall_time_s": "wall time (s)", "gpu_hours": "GPU-hours",
               "tokens_per_s": "throughput (tokens/s)", "checkpoint_bytes": "checkpoint (bytes)"}


def _cost(data: SweepData) -> list[Block]:
    cost = data.fit.cost if data.fit else {}
    out = [Block("h2", "Cost laws: P(M) = f(S, R, T)"),
           Block("p", "Measured GPU count (S), wall time (R) and checkpoint size (T), fitted as "
                      "y = k·x^p with a Huber loss in log space (one slow run does not tilt it).")]
    rows = []
    for key, e in cost.items():
        ci, p = e.intervals, e.params
        rows.append((COST_LABELS.get(key, key), e.x,
                     fmt(p["k"]) + (f" [{fmt(ci['k'][0])}, {fmt(ci['k'][1])}]" if "k" in ci else ""),
                     fmt(p["p"]) + (f" [{fmt(ci['p'][0])}, {fmt(ci['p'][1])}]" if "p" in ci else ""),
                     str(e.n)))
    if rows:
        out.append(Block("table", rows=(("cost y", "x", "k", "p", "runs"), *rows)))
    else:
        out.append(Block("p", "No cost laws in the fit."))
    if "gpu_hours" not in cost and not any((r.gpu_count or 0) > 0 for r in data.records):
        out.append(Block("p", "No GPU-hours law: every run ran without a GPU."))
    return out + [Block("figure", figure="cost")]


def _floor(fit: FitResult | None) -> list[Block]:
    floor = fit.floor.entropy_nats_per_token if fit and fit.floor else None
    if floor is None:
        return []
    rows = [("entropy of the synthetic source", fmt(floor, 4), "", "")]
    for k in ("saturating", "chinchilla", "compute"):
        e = fit.laws.get(k)
        if e is None:
            continue
        v = e.params["E"]
        lo, hi = e.intervals.get("E", (v, v))
        verdict = ("consistent: the interval holds the floor" if lo <= floor <= hi else
                   "above the floor: possible, a gap the law says size cannot close"
                   if lo > floor else "below the floor: impossible, not reliable")
        rows.append((f"E of the {k} law", fmt(v, 4),
                     f"[{fmt(lo, 4)}, {fmt(hi, 4)}]" if "E" in e.intervals else "", verdict))
    return [Block("h2", "Irreducible loss vs the true entropy"),
            Block("p", "The synthetic source's entropy rate is the lowest loss any model can "
                       "reach; a fitted E below it means the law extrapolates too far."),
            Block("table", rows=(("", "nats/token", "CI", "vs the floor"), *rows)),
            *_theory(fit)]


def _theory(fit: FitResult) -> list[Block]:
    """The exponents a known-law source predicts, beside the fitted ones."""
    theory = fit.floor.theory if fit.floor else {}
    if not theory:
        return []
    rows = []
    for law, name in (("chinchilla", "alpha"), ("chinchilla", "beta"), ("saturating", "alpha"),
                      ("power", "alpha")):
        e = fit.laws.get(law)
        if e is None or name not in theory:
            continue
        v = e.params[name]
        ci = e.intervals.get(name)
        rows.append((f"{name} of the {law} law", fmt(v, 3),
                     f"[{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else "", fmt(theory[name], 3),
                     f"{v - theory[name]:+.3f}"))
    return [Block("p", "The source's facts follow a Zipf law p_k ∝ k^−a, so its mechanism "
                       "predicts alpha = a − 1 (if the facts a model holds grow in proportion to "
                       "N) and beta = (a − 1)/a (if a fact is learned after a fixed number of "
                       "sightings); the fitted exponents beside them:"),
            Block("table", rows=(("exponent", "fitted", "CI", "theory", "fitted − theory"),
                                 *rows))] if rows else []


RESULT_COLUMNS = (("run_id", "run"), ("status", "status"), ("model_kind", "kind"),
                  ("hidden_dim", "hidden"), ("num_layers", "layers"),
                  ("params_nonembedding", "N (params)"), ("tokens", "D (tokens)"),
                  ("flops", "C (FLOPs)"), ("val_loss", "val loss (nats/token)"),
                  ("val_bpb", "val bits/byte"), ("wall_time_s", "wall time (s)"),
                  ("gpu_hours", "GPU-hours"), ("checkpoint_bytes", "checkpoint (bytes)"))


def _results_table(data: SweepData) -> list[Block]:
    held = set(data.fit.heldout_run_ids) if data.fit else set()
    key = lambda r: (r.params_nonembedding or 0, r.tokens or 0, r.run_id)  # noqa: E731
    rows = []
    for r in sorted(data.records, key=key):
        cells = [fmt(getattr(r, col, None)) for col, _ in RESULT_COLUMNS]
        if r.run_id in held:
            cells[0] += " (held out)"
        rows.append(tuple(cells))
    return [Block("h2", "Results"),
            Block("table", rows=(tuple(h for _, h in RESULT_COLUMNS), *rows))]


def _skipped(data: SweepData) -> list[Block]:
    if data.fit is not None:
        skipped = [(s.run_id, s.status, s.reason) for s in data.fit.skipped]
    else:  # no fit: list the runs that a fit would skip
        skipped = [(r.run_id, r.status, r.error or "not completed")
                   for r in data.records if r.status != "completed"]
    if not skipped:
        return [Block("h2", "Skipped runs"), Block("p", "None: every run was used.")]
    return [Block("h2", "Skipped runs"),
            Block("table", rows=(("run", "status", "why it is not in the fit"), *skipped))]


# --------------------------------------------------------------------------- rendering


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], manifest: dict[str, Any]) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            lines += [f"# {b.text}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.text}", ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "list":
            lines += [f"- {item}" for item in b.rows] + [""]
        elif b.kind == "table":
            header, *rows = b.rows
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif b.kind == "figure":
            entry = manifest.get(b.figure) or {}
            png = next((f for f in entry.get("files", []) if f.endswith(".png")), None)
            if png:
                lines += [f"![{b.figure}]({layout.PLOTS_DIR}/{png})", "", f"*{entry.get('caption', '')}*",
                          ""]
            else:
                lines += [f"*Figure {b.figure} not drawn: "
                          f"{entry.get('missing', 'not in the plots manifest')}.*", ""]
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:72rem;margin:2rem auto;
padding:0 1rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
figure{margin:1rem 0}img{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#444}.missing{color:#8a4b00;font-style:italic}
.scroll{overflow-x:auto}
"""


def render_html(blocks: list[Block], manifest: dict[str, Any], plots_dir: Path) -> str:
    e = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "llmscale report")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in b.rows) + "</ul>")
        elif b.kind == "table":
            header, *rows = b.rows
            parts.append('<div class="scroll"><table><thead><tr>'
                         + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row)
                                   + "</tr>" for row in rows) + "</tbody></table></div>")
        elif b.kind == "figure":
            entry = manifest.get(b.figure) or {}
            png = next((f for f in entry.get("files", []) if f.endswith(".png")), None)
            if png and (plots_dir / png).is_file():
                data = base64.b64encode((plots_dir / png).read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{e(b.figure)}" '
                             f'src="data:image/png;base64,{data}">'
                             f"<figcaption>{e(entry.get('caption', ''))}</figcaption></figure>")
            else:
                parts.append(f'<p class="missing">Figure {e(b.figure)} not drawn: '
                             f"{e(entry.get('missing', 'not in the plots manifest'))}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
