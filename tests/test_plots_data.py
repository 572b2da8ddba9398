"""A synthetic sweep on disk, for the plots and report tests.

Records are made with RunRecord and the project's accounting; losses follow a Chinchilla law
with known parameters plus small noise; fit.json is built from those known parameters in the
fit.json schema (a legitimate fixture for a renderer: it checks drawing, not fitting).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from llmscale.accounting import flops_per_token, param_counts
from llmscale.config import ModelConfig
from llmscale.plots import predict
from llmscale.records import RunRecord, upsert_record, write_json

VOCAB = 257
TRUE = {"E": 1.6, "A": 60.0, "B": 400.0, "alpha": 0.35, "beta": 0.4}
FLOOR_NATS = 1.5


def shapes(hidden=(16, 32, 64, 128), layers=(1, 2)):
    return [(h, n) for h in hidden for n in layers]


def make_records(shapes_, tokens=(200_000, 800_000), incomplete=0, gpus=0, seed=0,
                 budgets=(3e10, 3e11)):
    """One record per shape x token count and per shape x FLOP budget (IsoFLOP points);
    the last `incomplete` records are not completed."""
    rng = np.random.default_rng(seed)
    recs = []
    for h, nl in shapes_:
        m = ModelConfig(embedding_dim=16, hidden_dim=h, num_layers=nl)
        pc = param_counts(VOCAB, m)
        fpt = flops_per_token(VOCAB, m)
        for d in list(tokens) + [int(c // fpt) for c in budgets]:
            loss = float(predict("chinchilla", TRUE, N=pc.nonembedding, D=d)
                         * np.exp(rng.normal(0, 0.005)))
            wall = float(2e-8 * pc.nonembedding * d ** 0.9)
            rid = f"h{h}l{nl}d{d}"
            recs.append(RunRecord(
                run_id=rid, sweep="synthetic", status="completed", vocab_size=VOCAB,
                embedding_dim=16, hidden_dim=h, num_layers=nl, dropout=0.0, tie_weights=False,
                seq_len=32, batch_size=8, lr=3e-3, seed=0, params_total=pc.total,
                params_embedding=pc.embedding, params_nonembedding=pc.nonembedding,
                flops_per_token=fpt, tokens=d, flops=float(fpt * d), train_loss=loss + 0.02,
                val_loss=loss, val_ppl=float(np.exp(loss)), val_bpb=float(loss / np.log(2)),
                gpu_count=gpus, device_name="NVIDIA H100" if gpus else "cpu", world_size=1,
                wall_time_s=wall, gpu_hours=gpus * wall / 3600, tokens_per_s=d / wall,
                checkpoint_bytes=4 * pc.total + 512, data_source="synthetic",
                tokenizer_kind="bytes", data_entropy_bpb=float(FLOOR_NATS / np.log(2)),
                run_dir=f"runs/synthetic-{rid}"))
    for r in recs[len(recs) - incomplete:]:
        r.status, r.val_loss, r.error = "failed", None, "killed by the test"
    return recs


def write_metrics(sweep_dir: Path, rec: RunRecord, steps: int = 12) -> None:
    run = sweep_dir / rec.run_dir
    run.mkdir(parents=True, exist_ok=True)
    final = rec.val_loss if rec.val_loss is not None else 3.0
    with open(run / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "tokens", "train_loss", "val_loss", "lr", "grad_norm",
                    "tokens_per_s", "elapsed_s"])
        n = steps if rec.status == "completed" else steps // 2
        for s in range(1, n + 1):
            tok = rec.tokens * s // steps
            tl = final + 3.0 * (s / steps) ** -0.5 - 3.0 + 0.03
            vl = f"{tl - 0.02:.4f}" if s % 4 == 0 else ""
            w.writerow([s, tok, f"{tl:.4f}", vl, 1e-3, 0.5, 1e5, s * 0.1])


def make_fit(records, laws=("linear", "power", "saturating", "chinchilla", "compute"),
             n_heldout=2, isoflop=True, resamples=40, budgets=(3e10, 3e11)):
    """fit.json from the known parameters, in the contract schema."""
    pts = [{"run_id": r.run_id, "N": float(r.params_nonembedding), "D": float(r.tokens),
            "C": r.flops, "loss": r.val_loss} for r in records if r.status == "completed"]
    pts.sort(key=lambda p: p["N"])
    held = [p["run_id"] for p in pts[-n_heldout:]] if n_heldout else []
    rng = np.random.default_rng(1)
    known = {
        "linear": ({"a": -1.9e-5, "b": 6.9}, ["N"]),
        "power": ({"A": 19.0, "alpha": 0.116}, ["N"]),
        "saturating": ({"E": 1.6, "A": 21.3, "alpha": 0.16}, ["N"]),
        "chinchilla": (TRUE, ["N", "D"]),
        "compute": ({"E": 1.6, "A": 360.0, "gamma": 0.18}, ["C"]),
    }
    out_laws = {}
    for name in laws:
        params, inputs = known[name]
        samples = [{k: v * (1 + rng.normal(0, 0.02)) for k, v in params.items()}
                   for _ in range(resamples)]
        res = []
        for p in pts:
            pred = float(predict(name, params, N=p["N"], D=p["D"], C=p["C"]))
            res.append({"run_id": p["run_id"], "observed": p["loss"], "predicted": pred,
                        "log_residual": float(np.log(p["loss"] / pred)) if pred > 0 else None})
        res = [r for r in res if r["log_residual"] is not None]
        out_laws[name] = {
            "inputs": inputs, "params": params,
            "ci": {k: [v * 0.95, v * 1.05] for k, v in params.items()}, "ci_level": 0.95,
            "bootstrap": {"resamples": resamples, "seed": 0, "samples": samples},
            "heldout": {"n_fit": len(pts) - len(held), "n_heldout": len(held),
                        "heldout_run_ids": held, "mean_abs_rel_err": 0.01 * (1 + len(name) % 3),
                        "max_abs_rel_err": 0.03},
            "residuals": res, "objective": 1e-3,
        }
    fit = {"source": "results.csv", "n": "params_nonembedding", "loss": "val_loss",
           "reduce": "best",
           "skipped": [{"run_id": r.run_id, "status": r.status, "reason": "not completed"}
                       for r in records if r.status != "completed"],
           "points": pts, "laws": out_laws,
           "ranking": sorted(out_laws, key=lambda k: out_laws[k]["heldout"]["mean_abs_rel_err"]),
           "cost": {"wall_time_s": {"x": "N*D", "params": {"k": 2e-8, "p": 0.95},
                                    "ci": {"k": [1e-8, 3e-8], "p": [0.9, 1.0]}, "n": len(pts)},
                    "checkpoint_bytes": {"x": "N", "params": {"k": 4.0, "p": 1.0},
                                         "ci": {"k": [3.9, 4.1], "p": [0.99, 1.01]},
                                         "n": len(pts)}},
           "floor": {"entropy_bpb": FLOOR_NATS / np.log(2), "entropy_nats_per_token": FLOOR_NATS}}
    if "chinchilla" in laws:
        fit["compute_optimal"] = {"chinchilla": {"a": 0.53, "b": 0.47, "G": 0.3,
                                                 "N_opt": "G*(C/6)^a", "D_opt": "(C/6)^b / G"}}
        if isoflop and budgets:
            # Approach 2 on the fixture's own points: a parabola in log10 N per budget.
            out = []
            for c in budgets:
                mine = [p for p in pts if abs(np.log10(p["C"] / c)) < 0.05]
                x = np.log10([p["N"] for p in mine])
                par = np.polyfit(x, [p["loss"] for p in mine], 2)
                n_opt = 10 ** (-par[1] / (2 * par[0]))
                out.append({"C": c, "N_opt": n_opt, "D_opt": c / 6 / n_opt,
                            "loss_min": float(np.polyval(par, np.log10(n_opt))),
                            "parabola": [float(v) for v in par]})
            fit["compute_optimal"]["isoflop"] = {"a": 0.5, "b": 0.5, "budgets": out}
    return fit


def write_sweep(sweep_dir: Path, records, fit=None, metrics=True) -> Path:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for r in records:
        upsert_record(sweep_dir / "results.csv", r)
        if metrics:
            write_metrics(sweep_dir, r)
    if fit is not None:
        write_json(sweep_dir / "fit.json", fit)
        # fresh (not older than results.csv), so plot/report use it instead of refitting
        t = os.stat(sweep_dir / "results.csv").st_mtime_ns
        os.utime(sweep_dir / "fit.json", ns=(t, t))
    return sweep_dir


def drop_columns(path: Path, keep_out: list[str]) -> None:
    """Rewrite results.csv as an older schema without some columns."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = [c for c in rows[0] if c not in keep_out]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def load(path: Path):
    return json.loads(Path(path).read_text())
