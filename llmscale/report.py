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
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmscale.plots import (
    LAW_LABELS,
    LAW_ORDER,
    MANIFEST,
    PLOTS_DIR,
    SweepData,
    fitted_laws,
    heldout_ids,
    load_sweep,
    make_plots,
    run_fit,
)
from llmscale.records import atomic_write_text

REPORT_MD = "report.md"
REPORT_HTML = "report.html"

# What each law needs from the data, to say why one is missing when the fitter gives no reason.
LAW_NEEDS = {
    "linear": "at least 2 distinct model sizes N",
    "power": "at least 2 distinct model sizes N",
    "saturating": "at least 3 distinct model sizes N",
    "chinchilla": "several model sizes N and several token counts D",
    "compute": "completed runs spread over several compute budgets C",
}


@dataclass(frozen=True)
class Block:
    kind: str  # h1 | h2 | p | table | figure | list
    text: str = ""  # heading or paragraph text; figure caption
    rows: tuple = ()  # table: (header, *rows); list: items
    figure: str = ""  # figure name in plots/plots.json


# --------------------------------------------------------------------------- entry points


def build_all(sweep_dir: Path, *, bootstrap: int | None = None) -> None:
    """After a sweep: fit (writes fit.json), draw the figures, write the report.

    Works on partial sweeps and on sweeps too small for some laws: what cannot be fitted or
    drawn is named in the report with the reason. bootstrap: resamples for the fit's
    confidence intervals (None: the fitter's default).
    """
    sweep_dir = Path(sweep_dir)
    note = run_fit(sweep_dir, bootstrap=bootstrap)  # the sweep has just changed results.csv: always refit
    data = load_sweep(sweep_dir, refit=False)
    if note:
        data = SweepData(data.sweep_dir, data.records, data.problems, data.fit,
                         note + ("; showing the older fit.json" if data.fit else ""))
    make_plots(sweep_dir, data)
    write_report(sweep_dir, data)


def report_cli(sweep_dir: Path) -> int:
    sweep_dir = Path(sweep_dir)
    data = load_sweep(sweep_dir)
    if data.fit_note:
        print(f"llmscale: {data.fit_note}", file=sys.stderr)
    if _plots_stale(sweep_dir):
        make_plots(sweep_dir, data)
    md, page = write_report(sweep_dir, data)
    print(f"wrote {md} and {page}")
    return 0


def write_report(sweep_dir: Path, data: SweepData | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html from results.csv, fit.json and the figures."""
    sweep_dir = Path(sweep_dir)
    data = data or load_sweep(sweep_dir)
    if _plots_stale(sweep_dir):
        make_plots(sweep_dir, data)
    manifest = json.loads((sweep_dir / PLOTS_DIR / MANIFEST).read_text(encoding="utf-8"))
    blocks = report_blocks(data, manifest)
    md, page = sweep_dir / REPORT_MD, sweep_dir / REPORT_HTML
    atomic_write_text(md, render_markdown(blocks, manifest))
    atomic_write_text(page, render_html(blocks, manifest, sweep_dir / PLOTS_DIR))
    return md, page


def _plots_stale(sweep_dir: Path) -> bool:
    man = sweep_dir / PLOTS_DIR / MANIFEST
    if not man.is_file():
        return True
    inputs = [sweep_dir / "results.csv", sweep_dir / "fit.json"]
    newest = max(p.stat().st_mtime for p in inputs if p.is_file())
    return man.stat().st_mtime < newest


# --------------------------------------------------------------------------- content


def report_blocks(data: SweepData, manifest: dict[str, Any]) -> list[Block]:
    fit = data.fit or {}
    name = next((r.sweep for r in data.records if r.sweep), data.sweep_dir.name)
    b: list[Block] = [Block("h1", f"Scaling report: {name}")]
    if data.fit_note:
        b.append(Block("p", f"Note: {data.fit_note}."))
    b += _summary(data)
    b += _laws(data)
    b += _founding(fit, data.fit_note)
    b += _compute_optimal(fit)
    b += _cost(data)
    b += _floor(fit)
    b += [Block("h2", "Training"), Block("figure", figure="learning_curves")]
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
        vals = [getattr(r, col) for r in recs if getattr(r, col) is not None]
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
    if data.fit:
        rows += [("fitted on", f"{len(data.fit.get('points') or [])} points: loss column "
                               f"`{data.fit.get('loss')}`, N column `{data.fit.get('n')}`, "
                               f"several runs per shape reduced by `{data.fit.get('reduce')}`")]
    out = [Block("h2", "Sweep summary"), Block("table", rows=(("quantity", "value"), *rows))]
    notes = (data.fit or {}).get("notes") or []
    if notes:
        out += [Block("p", "Notes from the fit:"), Block("list", rows=tuple(map(str, notes)))]
    if data.problems:
        out += [Block("p", f"{len(data.problems)} rows of results.csv could not be read and are "
                           "left out:"), Block("list", rows=tuple(data.problems))]
    return out


def _param_ci(entry: dict[str, Any]) -> str:
    ci = entry.get("ci") or {}
    parts = []
    for k, v in (entry.get("params") or {}).items():
        lo_hi = ci.get(k)
        parts.append(f"{k} = {fmt(v)}" + (f" [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]"
                                          if lo_hi and len(lo_hi) == 2 else ""))
    return "; ".join(parts)


def _laws(data: SweepData) -> list[Block]:
    fit = data.fit or {}
    laws = fitted_laws(fit)
    out = [Block("h2", "Scaling laws")]
    if not data.fit:
        return out + [Block("p", _sentence(data.fit_note or "no fit: fit.json is missing"))]
    level = next((e.get("ci_level") for e in laws.values() if e.get("ci_level")), 0.95)
    rows = []
    for law in [k for k in LAW_ORDER if k in laws] + sorted(set(laws) - set(LAW_ORDER)):
        e = laws[law]
        h = e.get("heldout") or {}
        rows.append((LAW_LABELS.get(law, law), ", ".join(e.get("inputs") or []), _param_ci(e),
                     _pct(h.get("mean_abs_rel_err")), _pct(h.get("max_abs_rel_err")),
                     f"{h.get('n_fit', '–')} / {h.get('n_heldout', '–')}" if "n_fit" in h
                     else f"none held out: {h.get('reason', 'no held-out split')}"))
    if rows:
        out.append(Block("p", f"Parameters with {100 * level:.0f}% bootstrap intervals; held-out "
                              "error is the relative error of the law on runs it was not fitted "
                              "to (the largest ones)."))
        out.append(Block("table", rows=(("law", "inputs", f"parameters [{100 * level:.0f}% CI]",
                                         "held-out mean |err|", "held-out max |err|",
                                         "runs fitted / held out"), *rows)))
    if fit.get("ranking"):
        out.append(Block("p", "Ranking by held-out error, best first: "
                              + " > ".join(fit["ranking"]) + "."))
    missing = [k for k in LAW_ORDER if k not in laws]
    if missing:
        out.append(Block("p", "Not fitted:"))
        out.append(Block("list", rows=tuple(f"{k}: {_why_missing(k, fit)}" for k in missing)))
    out += [Block("figure", figure="loss_vs_params"), Block("figure", figure="residuals")]
    return out


def _why_missing(law: str, fit: dict[str, Any]) -> str:
    """The fitter's reason if fit.json gives one, else what the data lacks."""
    entry = (fit.get("laws") or {}).get(law)
    if isinstance(entry, dict):
        for key in ("error", "reason", "skipped"):
            if entry.get(key):
                return str(entry[key])
    for key in ("not_fitted", "unfitted", "missing", "failed"):
        reasons = fit.get(key)
        if isinstance(reasons, dict) and reasons.get(law):
            r = reasons[law]
            return r if isinstance(r, str) else json.dumps(r)
    pts = fit.get("points") or []
    n_sizes = len({p.get("N") for p in pts})
    n_tokens = len({p.get("D") for p in pts})
    return (f"the data has {len(pts)} fitted points, {n_sizes} distinct N and {n_tokens} "
            f"distinct D; this law needs {LAW_NEEDS.get(law, 'more data')}")


def _founding(fit: dict[str, Any], fit_note: str) -> list[Block]:
    laws = fitted_laws(fit)
    out = [Block("h2", "The founding linear model P(M) = aM + b against the power laws")]
    lin = laws.get("linear")
    if not fit:
        return out + [Block("p", _sentence(fit_note or "no fit: fit.json is missing"))]
    if not lin:
        return out + [Block("p", "The linear model was not fitted: "
                                 + _why_missing("linear", fit) + ".")]
    p = lin.get("params") or {}
    err = (lin.get("heldout") or {}).get("mean_abs_rel_err")
    text = (f"Fitted: L = {fmt(p.get('a'))}·N + {fmt(p.get('b'))}, held-out error "
            f"{_pct(err)}.")
    others = [(k, (laws[k].get("heldout") or {}).get("mean_abs_rel_err"))
              for k in ("power", "saturating", "chinchilla") if k in laws]
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
    rows = [(LAW_LABELS.get(k, k), _pct((laws[k].get("heldout") or {}).get("mean_abs_rel_err")),
             _pct((laws[k].get("heldout") or {}).get("max_abs_rel_err")))
            for k in LAW_ORDER if k in laws and k != "compute"]
    out += [Block("p", text + " Its line is the dash-dotted one on the loss-vs-N figure above."),
            Block("table", rows=(("law", "held-out mean |err|", "held-out max |err|"), *rows))]
    return out


def _compute_optimal(fit: dict[str, Any]) -> list[Block]:
    co = fit.get("compute_optimal") or {}
    out = [Block("h2", "Compute-optimal allocation")]
    ch, iso = co.get("chinchilla"), co.get("isoflop")
    if ch:
        out.append(Block("p", f"From the Chinchilla fit: N_opt = {ch.get('N_opt', 'G·(C/6)^a')}, "
                              f"D_opt = {ch.get('D_opt', '(C/6)^b / G')} with a = {fmt(ch.get('a'))}"
                              f", b = {fmt(ch.get('b'))}, G = {fmt(ch.get('G'))}."))
    if iso:
        out.append(Block("p", f"From IsoFLOP parabolas: N_opt ∝ C^{fmt(iso.get('a'))}, "
                              f"D_opt ∝ C^{fmt(iso.get('b'))}."))
        rows = [(fmt(x.get("C")), fmt(x.get("N_opt")), fmt(x.get("D_opt")),
                 fmt(x.get("loss_min"))) for x in iso.get("budgets") or []]
        if rows:
            out.append(Block("table", rows=(("budget C (FLOPs)", "N_opt (params)",
                                             "D_opt (tokens)", "loss at minimum (nats/token)"),
                                            *rows)))
    if not ch and not iso:
        out.append(Block("p", "No compute-optimal allocation: it needs the Chinchilla law "
                              "(several N and several D) or IsoFLOP budgets (several N at each of "
                              "several fixed compute budgets)."))
    return out + [Block("figure", figure="loss_vs_compute"), Block("figure", figure="isoflop")]


COST_LABELS = {"wall_time_s": "wall time (s)", "gpu_hours": "GPU-hours",
               "tokens_per_s": "throughput (tokens/s)", "checkpoint_bytes": "checkpoint (bytes)"}


def _cost(data: SweepData) -> list[Block]:
    cost = (data.fit or {}).get("cost") or {}
    out = [Block("h2", "Cost laws: P(M) = f(S, R, T)"),
           Block("p", "Measured GPU count (S), wall time (R) and checkpoint size (T), fitted as "
                      "y = k·x^p in log space.")]
    rows = []
    for key, e in cost.items():
        ci = e.get("ci") or {}
        p = e.get("params") or {}
        rows.append((COST_LABELS.get(key, key), e.get("x", "–"),
                     f"{fmt(p.get('k'))}" + (f" [{fmt(ci['k'][0])}, {fmt(ci['k'][1])}]"
                                             if ci.get("k") else ""),
                     f"{fmt(p.get('p'))}" + (f" [{fmt(ci['p'][0])}, {fmt(ci['p'][1])}]"
                                             if ci.get("p") else ""),
                     str(e.get("n", "–"))))
    if rows:
        out.append(Block("table", rows=(("cost y", "x", "k", "p", "runs"), *rows)))
    else:
        out.append(Block("p", "No cost laws in the fit."))
    if "gpu_hours" not in cost and not any((r.gpu_count or 0) > 0 for r in data.records):
        out.append(Block("p", "No GPU-hours law: every run ran without a GPU."))
    return out + [Block("figure", figure="cost")]


def _floor(fit: dict[str, Any]) -> list[Block]:
    floor = (fit.get("floor") or {}).get("entropy_nats_per_token")
    if floor is None:
        return []
    laws = fitted_laws(fit)
    rows = [("entropy of the synthetic source", fmt(floor), "", "")]
    for k in ("saturating", "chinchilla", "compute"):
        e = (laws.get(k) or {}).get("params", {}).get("E")
        if e is None:
            continue
        ci = ((laws[k].get("ci") or {}).get("E")) or None
        lo, hi = (ci[0], ci[1]) if ci else (e, e)
        verdict = ("consistent: the interval holds the floor" if lo <= floor <= hi else
                   "above the floor: possible, a gap the law says size cannot close" if lo > floor else
                   "below the floor: impossible, the law extrapolates badly")
        rows.append((f"E of the {k} law", fmt(e), f"[{fmt(lo)}, {fmt(hi)}]" if ci else "",
                     verdict))
    return [Block("h2", "Irreducible loss vs the true entropy"),
            Block("p", "The synthetic source's entropy rate is the lowest loss any model can "
                       "reach; a fitted E below it means the law extrapolates too far."),
            Block("table", rows=(("", "nats/token", "CI", "vs the floor"), *rows))]


RESULT_COLUMNS = (("run_id", "run"), ("status", "status"), ("hidden_dim", "hidden"),
                  ("num_layers", "layers"), ("params_nonembedding", "N (params)"),
                  ("tokens", "D (tokens)"), ("flops", "C (FLOPs)"),
                  ("val_loss", "val loss (nats/token)"), ("val_bpb", "val bits/byte"),
                  ("wall_time_s", "wall time (s)"), ("gpu_hours", "GPU-hours"),
                  ("checkpoint_bytes", "checkpoint (bytes)"))


def _results_table(data: SweepData) -> list[Block]:
    held = heldout_ids(data.fit)
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
    skipped = (data.fit or {}).get("skipped")
    if skipped is None:  # no fit: list the runs that a fit would skip
        skipped = [{"run_id": r.run_id, "status": r.status, "reason": r.error or "not completed"}
                   for r in data.records if r.status != "completed"]
    if not skipped:
        return [Block("h2", "Skipped runs"), Block("p", "None: every run was used.")]
    rows = [(s.get("run_id", "–"), s.get("status", "–"), s.get("reason", "–")) for s in skipped]
    return [Block("h2", "Skipped runs"),
            Block("table", rows=(("run", "status", "why it is not in the fit"), *rows))]


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
                lines += [f"![{b.figure}]({PLOTS_DIR}/{png})", "", f"*{entry.get('caption', '')}*",
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
