"""`llmscale fit SOURCE`: fit scaling laws to a sweep's results, write fit.json, print the table."""

from __future__ import annotations

import argparse
import sys

from llmscale.fit.guard import law_warnings
from llmscale.fit.result import FitResult


def add_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit scaling laws to a sweep's results")
    p.add_argument("source", help="sweep directory or results CSV")
    p.add_argument("--law", dest="laws", action="append", default=None,
                   help="law to fit (repeatable): linear, power, saturating, chinchilla, "
                        "compute (default: all that the data supports)")
    p.add_argument("--out", default=None, help="directory for fit.json (default: the sweep dir)")
    p.add_argument("--n", dest="n_column", default="params_nonembedding",
                   help="column for N (default params_nonembedding; or params_total)")
    p.add_argument("--d", dest="d_column", default="tokens", help="column for D (tokens)")
    p.add_argument("--c", dest="c_column", default="flops", help="column for C (FLOPs)")
    p.add_argument("--loss", dest="loss_column", default="val_loss", help="column for the loss")
    p.add_argument("--reduce", choices=["best", "mean"], default="best",
                   help="several runs per shape (learning rates, seeds): keep the best or the mean")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the bootstrap (default: the idle CPUs by load average, "
                        "1 below 100 resamples; the result does not depend on it)")
    p.add_argument("--all-runs", action="store_true",
                   help="include runs of results.csv that are no longer in the sweep's plan")


def run(args: argparse.Namespace) -> int:
    from llmscale.analysis import fit_sweep
    from llmscale.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: give 1 or more processes")
    fit = fit_sweep(args.source, laws=args.laws, out_dir=args.out, n_column=args.n_column,
                    d_column=args.d_column, c_column=args.c_column,
                    loss_column=args.loss_column, reduce=args.reduce, bootstrap=args.bootstrap,
                    seed=args.seed, all_runs=args.all_runs, workers=args.workers)
    print(format_table(fit))
    for w in fit_warnings(fit):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def fit_warnings(fit: FitResult) -> list[str]:
    """Every law's own warnings (fit.json's `warnings`), and an IsoFLOP exponent withheld."""
    out = [w for e in fit.laws.values() for w in law_warnings(fit, e)]
    iso = fit.compute_optimal.isoflop
    if iso is not None and iso.why_not:
        out.append(f"no IsoFLOP exponent: {iso.why_not}")
    for kind, g in fit.groups.items():
        out += [f"[{kind}] {w}" for w in fit_warnings(g)]
    return out


def _g(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def format_table(fit: FitResult) -> str:
    lines = [f"fit of {fit.source}: {len(fit.points)} points (N = {fit.n_column}, "
             f"loss = {fit.loss_column}, reduce = {fit.reduce}), {len(fit.skipped)} skipped"]
    lines += [f"  note: {n}" for n in fit.notes]
    lines.append(f"held out (every law): {len(fit.heldout_run_ids)} runs, {fit.heldout_rule}")
    lines.append(f"{'law':<11} {'held-out mean/max |err|':<24} parameters [95% CI]")
    for law, e in fit.laws.items():
        h = e.heldout
        err = (f"{100 * h.mean_abs_rel_err:.2f}% / {100 * h.max_abs_rel_err:.2f}%"
               if h.mean_abs_rel_err is not None else "–")
        ps = ", ".join(f"{k}={_g(v)}" + (f" [{_g(e.intervals[k][0])}, {_g(e.intervals[k][1])}]"
                                         if k in e.intervals else "")
                       for k, v in e.params.items())
        lines.append(f"{law:<11} {err:<24} {ps}")
    for law, why in fit.not_fitted.items():
        lines.append(f"{law:<11} not fitted: {why}")
    reliable = [k for k in fit.ranking if fit.laws[k].reliable]
    if reliable:
        lines.append("ranking by held-out error: " + " > ".join(reliable))
    after = "ranked after them" if reliable else "no law is reliable; by held-out error"
    for k in fit.ranking:
        if not fit.laws[k].reliable:
            e = fit.laws[k]
            lines.append(f"not reliable, {after}: {k} ({len(e.warnings)} warning(s), first: "
                         f"{e.warnings[0]})")
    c = fit.compute_optimal.chinchilla
    if c:
        lines.append(f"compute-optimal (chinchilla): N_opt = {_g(c.G)}*(C/{_g(c.q)})^{c.a:.3f}, "
                     f"D_opt = C / ({_g(c.q)} N_opt^{c.r:.3f}) ∝ C^{c.b:.3f}")
    i = fit.compute_optimal.isoflop
    if i:
        lines.append(f"IsoFLOP: {len(i.budgets)} budgets, N_opt ∝ C^{_g(i.a)}" if not i.why_not
                     else f"IsoFLOP: {len(i.budgets)} budgets with a minimum, no exponent "
                          "stated (see the warning)")
    for col, e in fit.cost.items():
        lines.append(f"cost {col} = {_g(e.params['k'])} * ({e.x})^{e.params['p']:.3f} (n={e.n})")
    if fit.floor:
        lines.append(f"source entropy: {fit.floor.entropy_nats_per_token:.4g} nats/token")
        if fit.floor.theory:  # a source whose law is known: its exponents beside the fitted
            lines.append("source theory: " + ", ".join(
                f"{k} = {v:.3g}" for k, v in fit.floor.theory.items()) + _fitted_vs_theory(fit))
    for kind, g in fit.groups.items():
        lines.append(f"[{kind}] " + ", ".join(
            f"{law}: " + ", ".join(f"{k}={_g(v)}" for k, v in e.params.items())
            for law, e in g.laws.items()))
    return "\n".join(lines)


def _fitted_vs_theory(fit) -> str:
    ch = fit.laws.get("chinchilla")
    if ch is None:
        return ""
    return " (chinchilla fitted " + ", ".join(
        f"{k} = {ch.params[k]:.3g}" for k in fit.floor.theory if k in ch.params) + ")"

