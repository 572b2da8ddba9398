"""Records -> scaling laws: read results.csv (or another CSV), reduce runs per shape, fit with
llmscale.fit, write fit.json atomically, print a table. All formulas live in llmscale.fit."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from llmscale.errors import UserError

FIT_FILE = "fit.json"
SHAPE_KEYS = ("vocab_size", "embedding_dim", "hidden_dim", "num_layers", "tie_weights", "tokens")
# Distinct values of the inputs a law needs before it means anything.
NEEDS_DISTINCT = {"linear": {"N": 2}, "power": {"N": 2}, "saturating": {"N": 3},
                  "chinchilla": {"N": 2, "D": 2}, "compute": {"C": 3}}


def _resolve(source: str | Path) -> Path:
    p = Path(source)
    if p.is_dir():
        p = p / "results.csv"
    if not p.is_file():
        raise UserError(f"{p} does not exist; give a sweep directory with results.csv or a CSV")
    return p


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), [])


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _load_points(path: Path, n_col: str, d_col: str, c_col: str, loss_col: str, reduce: str):
    """(points, skipped, notes, records) where a point is {run_id, N, D, C, loss}."""
    header = _header(path)
    is_records = "run_id" in header and "status" in header
    missing = [c for c in (n_col, loss_col) if c not in header]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; it has: "
                        f"{', '.join(header)} (map them with --n/--loss)")
    notes, skipped, records = [], [], []
    if is_records:
        from llmscale.records import read_results

        records, problems = read_results(path)
        notes += problems
        rows = []
        for r in records:
            if r.status != "completed":
                skipped.append({"run_id": r.run_id, "status": r.status,
                                "reason": r.error or "not completed"})
                continue
            d = r.to_dict()
            rows.append((r.run_id, d, tuple(d.get(k) for k in SHAPE_KEYS)))
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [(f"row{i + 2}", row, (i,)) for i, row in enumerate(csv.DictReader(fh))]
    has_d, has_c = d_col in header, c_col in header
    if not has_d and has_c:
        notes.append(f"D derived as C / (6 N): no column {d_col!r}")
    if not has_c and has_d and not is_records:
        notes.append(f"C derived as 6 N D: no column {c_col!r}")
    points = []
    for run_id, row, shape in rows:
        N, loss = _num(row.get(n_col)), _num(row.get(loss_col))
        if loss is None or not math.isfinite(loss) or loss <= 0:
            raise UserError(f"{path}: run {run_id} has {loss_col}={row.get(loss_col)!r}; losses "
                            "must be positive numbers (drop or fix that row)")
        if N is None or not N > 0:
            raise UserError(f"{path}: run {run_id} has {n_col}={row.get(n_col)!r}; N must be > 0")
        D, C = _num(row.get(d_col)), _num(row.get(c_col))
        if D is None and C is not None:
            D = C / (6 * N)
        if C is None and D is not None and not is_records:
            C = 6 * N * D
        points.append({"run_id": run_id, "N": N, "D": D, "C": C, "loss": loss, "_shape": shape})
    return _reduce(points, reduce), skipped, notes, records


def _reduce(points: list[dict], how: str) -> list[dict]:
    """Several runs per shape (learning rates, seeds): keep the best loss, or the mean."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault(p.pop("_shape"), []).append(p)
    out = []
    for g in groups.values():
        if how == "best" or len(g) == 1:
            out.append(min(g, key=lambda p: p["loss"]))
        else:
            m = dict(g[0])
            m["loss"] = float(np.mean([p["loss"] for p in g]))
            m["run_ids"] = [p["run_id"] for p in g]
            out.append(m)
    return out


def compute_frontier(points: list[dict]) -> list[dict]:
    """The runs on the lower envelope of loss against C (approach 1): each has a lower loss than
    every run with less compute. The `compute` law L(C) is a frontier, not a fit to all runs."""
    out, best = [], math.inf
    for p in sorted(points, key=lambda p: (p["C"], p["loss"])):
        if p["loss"] < best:
            out.append(p)
            best = p["loss"]
    return out


def best_per_size(points: list[dict]) -> list[dict]:
    """For laws of N alone: one point per N, the lowest loss over the sweep's token budgets.

    A sweep that also varies D holds several losses per size; mixing them would make L(N) fit
    the spread in D. The lowest is the size's loss in the most data-rich run (Kaplan et al.'s
    L(N) is the loss a size reaches when data is not the limit).
    """
    best: dict[float, dict] = {}
    for p in points:
        if p["N"] not in best or p["loss"] < best[p["N"]]["loss"]:
            best[p["N"]] = p
    return sorted(best.values(), key=lambda p: p["N"])


def _why_not(law: str, points: list[dict]) -> str | None:
    from llmscale.fit.laws import law_inputs, law_param_names

    need = len(law_param_names(law)) + 1
    usable = [p for p in points if all(p.get(k) for k in NEEDS_DISTINCT[law])]
    what = "runs"
    if law == "compute":
        usable, what = compute_frontier(usable), "runs on the loss-vs-compute frontier"
    elif law_inputs(law) == ["N"]:
        usable, what = best_per_size(usable), "sizes"
        if len(usable) == 1:
            return f"{law} needs at least {need} distinct values of N; all runs of one size"
    if len(usable) < need:
        return (f"{law} needs at least {need} {what} (parameters + 1) with "
                f"{', '.join(NEEDS_DISTINCT[law])}; the data has {len(usable)}")
    for k, n in NEEDS_DISTINCT[law].items():
        distinct = len({p[k] for p in usable})
        if distinct < n:
            return (f"{law} needs at least {n} distinct values of {k}; all {len(usable)} runs "
                    f"have {distinct}" + (" (all runs of one size)" if k == "N" else ""))
    return None


def _fit_one(law: str, points: list[dict], bootstrap: int, seed: int) -> dict:
    from llmscale.fit.laws import law_inputs, law_param_names, predict
    from llmscale.fit.robust import bootstrap as run_bootstrap
    from llmscale.fit.robust import fit_law, heldout_errors, heldout_split

    inputs = law_inputs(law)
    pts = [p for p in points if all(p.get(k) for k in inputs)]
    if law == "compute":
        pts = compute_frontier(pts)
    elif inputs == ["N"]:
        pts = best_per_size(pts)
    X = {k: np.array([p[k] for p in pts], dtype=float) for k in inputs}
    y = np.array([p["loss"] for p in pts], dtype=float)
    fit = fit_law(law, X, y)
    entry: dict[str, Any] = {"inputs": inputs, "params": fit.params, "objective": fit.objective,
                             "method": ("least squares on L" if law == "linear" else
                                        "Huber(delta=1e-3) on log L, summed, L-BFGS-B")}
    if bootstrap > 0:
        from tqdm import tqdm

        with tqdm(total=bootstrap, desc=f"bootstrap {law}", leave=False,
                  disable=not sys.stderr.isatty()) as bar:
            bs = run_bootstrap(fit, X, y, bootstrap, seed, progress=lambda i: bar.update())
        entry.update(ci=bs["ci"], ci_level=0.95,
                     bootstrap={"resamples": bootstrap, "seed": seed,
                                "samples": bs["samples"][:200]})
    # Leave-largest-out: by N for N-laws, by C (else N*D) for compute and chinchilla.
    key = X["N"] if inputs == ["N"] else (
        np.array([p.get("C") or 6 * p["N"] * p["D"] for p in pts]))
    mask = heldout_split(key, min_fit=len(law_param_names(law)) + 1)
    if mask is None:
        entry["heldout"] = {"reason": "too few runs or sizes to hold the largest out"}
    else:
        fit_in = fit_law(law, {k: v[~mask] for k, v in X.items()}, y[~mask])
        err = heldout_errors(law, fit_in.params, {k: v[mask] for k, v in X.items()}, y[mask])
        entry["heldout"] = {"n_fit": int((~mask).sum()), "n_heldout": int(mask.sum()),
                            "heldout_run_ids": [p["run_id"] for p, m in zip(pts, mask, strict=True) if m],
                            "mean_abs_rel_err": float(err.mean()),
                            "max_abs_rel_err": float(err.max()), "params": fit_in.params}
    pred = predict(law, fit.params, **X)
    entry["residuals"] = [{"run_id": p["run_id"], "observed": float(o), "predicted": float(q),
                           "log_residual": float(np.log(o) - np.log(q)) if q > 0 else None}
                          for p, o, q in zip(pts, y, pred, strict=True)]
    return entry


def fit_sweep(source: str | Path, *, laws=None, out_dir=None, n_column="params_nonembedding",
              d_column="tokens", c_column="flops", loss_column="val_loss", reduce="best",
              bootstrap=200, seed=0) -> dict:
    """Fit every requested law (default: all the data supports) and write fit.json."""
    from llmscale.fit.cost import COST_LAWS, fit_cost
    from llmscale.fit.frontier import chinchilla_optimal, isoflop
    from llmscale.fit.laws import LAW_NAMES
    from llmscale.records import write_json

    if reduce not in ("best", "mean"):
        raise UserError(f"reduce={reduce!r}; allowed: best, mean")
    unknown = [law for law in laws or [] if law not in LAW_NAMES]
    if unknown:
        raise UserError(f"unknown law(s) {', '.join(unknown)}; known: {', '.join(LAW_NAMES)}")
    path = _resolve(source)
    points, skipped, notes, records = _load_points(path, n_column, d_column, c_column,
                                                   loss_column, reduce)
    out: dict[str, Any] = {"source": str(path), "n": n_column, "loss": loss_column,
                           "reduce": reduce, "notes": notes, "skipped": skipped,
                           "points": [{k: p[k] for k in ("run_id", "N", "D", "C", "loss")}
                                      for p in points],
                           "laws": {}, "not_fitted": {}}
    for law in laws or LAW_NAMES:
        why = _why_not(law, points)
        if why and laws:
            raise UserError(why)
        if why:
            out["not_fitted"][law] = why
            continue
        out["laws"][law] = _fit_one(law, points, bootstrap, seed)
    if not out["laws"]:
        raise UserError(f"{path}: no law can be fitted: " + "; ".join(out["not_fitted"].values()))
    out["ranking"] = sorted((k for k, e in out["laws"].items()
                             if "mean_abs_rel_err" in e["heldout"]),
                            key=lambda k: out["laws"][k]["heldout"]["mean_abs_rel_err"])
    co: dict[str, Any] = {}
    if "chinchilla" in out["laws"]:
        optimal = chinchilla_optimal(out["laws"]["chinchilla"]["params"])
        if optimal is None:
            notes.append("no compute-optimal allocation from the chinchilla fit: a fitted "
                         "exponent (alpha or beta) is not positive")
        else:
            co["chinchilla"] = optimal
    with_c = [p for p in points if p.get("C")]
    iso = isoflop([p["N"] for p in with_c], [p["C"] for p in with_c],
                  [p["loss"] for p in with_c]) if with_c else None
    if iso:
        co["isoflop"] = iso
    out["compute_optimal"] = co
    out["cost"] = _cost_laws(records, points, n_column, bootstrap, seed, COST_LAWS, fit_cost)
    floor = _floor(records)
    if floor:
        out["floor"] = floor
    write_json(Path(out_dir or path.parent) / FIT_FILE, out)
    return out


def _cost_laws(records, points, n_column, resamples, seed, cost_laws, fit_cost) -> dict:
    """Cost laws over the completed runs (every run, not reduced: each one cost what it cost)."""
    done = [r.to_dict() for r in records if r.status == "completed"]
    cost = {}
    for col, xexpr in cost_laws:
        if col == "gpu_hours" and not any((d.get("gpu_count") or 0) > 0 for d in done):
            continue  # every run was on CPU: no GPU-hours to fit
        xs, ys = [], []
        for d in done:
            N, D = _num(d.get(n_column)), _num(d.get("tokens"))
            if N is None or (xexpr == "N*D" and D is None):
                continue
            xs.append(N * D if xexpr == "N*D" else N)
            ys.append(_num(d.get(col)) or 0.0)
        entry = fit_cost(xs, ys, resamples=min(resamples, 200), seed=seed) if xs else None
        if entry:
            cost[col] = {"x": xexpr, **entry}
    return cost


def _floor(records) -> dict | None:
    done = [r for r in records if r.status == "completed" and r.data_entropy_bpb
            and r.val_bytes_per_token]
    if not done:
        return None
    bpb = float(np.median([r.data_entropy_bpb for r in done]))
    bpt = float(np.median([r.val_bytes_per_token for r in done]))
    return {"entropy_bpb": bpb, "entropy_nats_per_token": bpb * math.log(2) * bpt}


# ----------------------------------------------------------------------------- output


def _g(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def format_table(fit: dict) -> str:
    lines = [f"fit of {fit['source']}: {len(fit['points'])} points (N = {fit['n']}, "
             f"loss = {fit['loss']}, reduce = {fit['reduce']}), {len(fit['skipped'])} skipped"]
    lines += [f"  note: {n}" for n in fit.get("notes", [])]
    lines.append(f"{'law':<11} {'held-out mean/max |err|':<24} parameters [95% CI]")
    for law, e in fit["laws"].items():
        h = e["heldout"]
        err = (f"{100 * h['mean_abs_rel_err']:.2f}% / {100 * h['max_abs_rel_err']:.2f}%"
               if "mean_abs_rel_err" in h else "–")
        ps = ", ".join(f"{k}={_g(v)}" + (f" [{_g(e['ci'][k][0])}, {_g(e['ci'][k][1])}]"
                                         if e.get("ci") else "")
                       for k, v in e["params"].items())
        lines.append(f"{law:<11} {err:<24} {ps}")
    for law, why in fit.get("not_fitted", {}).items():
        lines.append(f"{law:<11} not fitted: {why}")
    if fit.get("ranking"):
        lines.append("ranking by held-out error: " + " > ".join(fit["ranking"]))
    co = fit.get("compute_optimal", {})
    if "chinchilla" in co:
        c = co["chinchilla"]
        lines.append(f"compute-optimal (chinchilla): N_opt = {_g(c['G'])}*(C/6)^{c['a']:.3f}, "
                     f"D_opt = (C/6)^{c['b']:.3f}/{_g(c['G'])}")
    if co.get("isoflop"):
        i = co["isoflop"]
        lines.append(f"IsoFLOP: {len(i['budgets'])} budgets, N_opt ∝ C^{_g(i['a'])}")
    for col, e in fit.get("cost", {}).items():
        lines.append(f"cost {col} = {_g(e['params']['k'])} * ({e['x']})^{e['params']['p']:.3f} "
                     f"(n={e['n']})")
    if fit.get("floor"):
        f = fit["floor"]
        lines.append(f"source entropy: {f['entropy_nats_per_token']:.4g} nats/token "
                     f"(fitted E: {_g(_fitted_E(fit))})")
    return "\n".join(lines)


def fit_cli(args) -> int:
    fit = fit_sweep(args.source, laws=args.laws, out_dir=args.out, n_column=args.n_column,
                    d_column=args.d_column, c_column=args.c_column, loss_column=args.loss_column,
                    reduce=args.reduce, bootstrap=args.bootstrap, seed=args.seed)
    print(format_table(fit))
    return 0


def _fitted_E(fit: dict) -> float | None:
    for law in ("chinchilla", "saturating", "compute"):
        if law in fit["laws"]:
            return fit["laws"][law]["params"].get("E")
    return None


# ----------------------------------------------------------------------------- predict


def _interval(law: str, entry: dict, **inputs) -> tuple[float, float] | None:
    from llmscale.fit.laws import predict

    samples = (entry.get("bootstrap") or {}).get("samples") or []
    if len(samples) < 2:
        return None
    preds = np.array([float(predict(law, s, **inputs)) for s in samples])
    q = 100 * (1 - float(entry.get("ci_level", 0.95))) / 2
    lo, hi = np.nanpercentile(preds, [q, 100 - q])
    return float(lo), float(hi)


def predict_loss(fit: dict, N: float, D: float | None = None, law: str | None = None) -> dict:
    """Predicted loss at N (and D) with the bootstrap interval; law defaults to the best-ranked
    one the inputs support."""
    from llmscale.fit.laws import law_inputs, predict

    laws = fit.get("laws") or {}
    have = {"N"} | ({"D"} if D is not None else set())
    if law is None:
        order = list(fit.get("ranking") or []) + [k for k in laws if k not in (fit.get("ranking")
                                                                               or [])]
        usable = [k for k in order if set(law_inputs(k)) <= have]
        if D is not None and "chinchilla" in usable:
            usable = ["chinchilla"]
        if not usable:
            raise UserError(f"the fit has no law that predicts from {', '.join(sorted(have))}; "
                            f"it has: {', '.join(laws) or 'none'}")
        law = usable[0]
    if law not in laws:
        raise UserError(f"law {law!r} is not in the fit; it has: {', '.join(laws) or 'none'}")
    if not set(law_inputs(law)) <= have:
        raise UserError(f"law {law!r} needs {', '.join(law_inputs(law))}: add --tokens")
    inputs = {"N": N, "D": D} if law == "chinchilla" else {"N": N}
    return {"law": law, "loss": float(predict(law, laws[law]["params"], **inputs)),
            "interval": _interval(law, laws[law], **inputs)}


def plan_budget(fit: dict, flops: float | None = None, gpu_hours: float | None = None) -> dict:
    """Compute-optimal N, D at a FLOP (or GPU-hour) budget, predicted loss, wall time and
    checkpoint size. GPU-hours -> FLOPs by inverting the gpu_hours cost law at N*D = C/6."""
    from llmscale.fit.frontier import allocate
    from llmscale.fit.laws import predict, predict_cost

    co = (fit.get("compute_optimal") or {}).get("chinchilla")
    if co is None:
        raise UserError("the fit has no chinchilla law, so no compute-optimal allocation; fit "
                        "runs that vary both size and tokens")
    cost = fit.get("cost") or {}
    if gpu_hours is not None:
        if "gpu_hours" not in cost:
            raise UserError("the fit has no gpu_hours cost law (no run recorded GPU time); "
                            "use --budget-flops")
        k, p = cost["gpu_hours"]["params"]["k"], cost["gpu_hours"]["params"]["p"]
        flops = 6 * (gpu_hours / k) ** (1 / p)  # gpu_hours = k (N D)^p and N_opt D_opt = C / 6
    assert flops is not None
    N, D = (float(v) for v in allocate(co, flops))
    entry = fit["laws"]["chinchilla"]
    out = {"C": float(flops), "N_opt": N, "D_opt": D,
           "loss": float(predict("chinchilla", entry["params"], N=N, D=D)),
           "interval": _interval("chinchilla", entry, N=N, D=D)}
    if "wall_time_s" in cost:
        out["wall_time_s"] = float(predict_cost(cost["wall_time_s"]["params"], N * D))
    if "checkpoint_bytes" in cost:
        out["checkpoint_bytes"] = float(predict_cost(cost["checkpoint_bytes"]["params"], N))
    return out


def _read_fit(path: str | Path) -> dict:
    import json

    p = Path(path)
    if p.is_dir():
        p = p / FIT_FILE
    if not p.is_file():
        raise UserError(f"{p} does not exist; run `llmscale fit` first")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p} is not valid JSON ({e}); rerun `llmscale fit`") from e


def predict_cli(args) -> int:
    fit = _read_fit(args.fit_json)
    budgets = [v for v in (args.budget_flops, args.budget_gpu_hours) if v is not None]
    for name, v in (("--params", args.params), ("--tokens", args.tokens),
                    ("--budget-flops", args.budget_flops),
                    ("--budget-gpu-hours", args.budget_gpu_hours)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise UserError(f"{name} must be a positive number, got {v}")
    if (args.params is None) == (not budgets) or len(budgets) > 1:
        raise UserError("give either --params N [--tokens D], or one of --budget-flops C / "
                        "--budget-gpu-hours H")
    if args.params is not None:
        r = predict_loss(fit, args.params, args.tokens, law=args.law)
        ci = r["interval"]
        print(f"{r['law']}: predicted loss {r['loss']:.4f} nats/token"
              + (f" (95% interval {ci[0]:.4f} – {ci[1]:.4f})" if ci else ""))
        return 0
    r = plan_budget(fit, flops=args.budget_flops, gpu_hours=args.budget_gpu_hours)
    ci = r["interval"]
    print(f"budget C = {r['C']:.4g} FLOPs: N_opt = {r['N_opt']:.4g}, D_opt = {r['D_opt']:.4g} "
          f"tokens, predicted loss {r['loss']:.4f}"
          + (f" (95% interval {ci[0]:.4f} – {ci[1]:.4f})" if ci else ""))
    if "wall_time_s" in r:
        print(f"predicted wall time {r['wall_time_s']:.4g} s")
    if "checkpoint_bytes" in r:
        print(f"predicted checkpoint size {r['checkpoint_bytes']:.4g} bytes")
    return 0
