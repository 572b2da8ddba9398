"""A synthetic sweep on disk, for the plots and report tests.

Records are made with RunRecord and the project's accounting; losses follow a Chinchilla law
with known parameters plus small noise. fit.json is always the real fitter's output
(`llmscale.analysis.fit_sweep`), so a drift between the fitter and its readers fails here.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from llmscale.accounting import flops_per_token, param_counts
from llmscale.analysis import fit_sweep
from llmscale.config import ModelConfig
from llmscale.fit.laws import predict
from llmscale.records import RunRecord, upsert_record

VOCAB = 257
TRUE = {"E": 1.6, "A": 60.0, "B": 400.0, "alpha": 0.35, "beta": 0.4}
FLOOR_NATS = 1.5


def shapes(hidden=(16, 32, 64, 128), layers=(1, 2)):
    return [(h, n) for h in hidden for n in layers]


def make_records(shapes_, tokens=(200_000, 800_000), incomplete=0, gpus=0, seed=0,
                 budgets=(3e10, 3e11), kind="lstm", law=TRUE):
    """One record per shape x token count and per shape x FLOP budget (IsoFLOP points);
    the last `incomplete` records are not completed."""
    rng = np.random.default_rng(seed)
    recs = []
    for h, nl in shapes_:
        m = ModelConfig(embedding_dim=16, hidden_dim=h, num_layers=nl)
        pc = param_counts(VOCAB, m)
        fpt = flops_per_token(VOCAB, m)
        for d in list(tokens) + [int(c // fpt) for c in budgets]:
            loss = float(predict("chinchilla", law, N=pc.nonembedding, D=d)
                         * np.exp(rng.normal(0, 0.005)))
            wall = float(2e-8 * pc.nonembedding * d ** 0.9)
            rid = f"{kind}-h{h}l{nl}d{d}"
            recs.append(RunRecord(
                run_id=rid, sweep="synthetic", status="completed", vocab_size=VOCAB,
                model_kind=kind,
                embedding_dim=16, hidden_dim=h, num_layers=nl, dropout=0.0, tie_weights=False,
                seq_len=32, batch_size=8, lr=3e-3, seed=0, params_total=pc.total,
                params_embedding=pc.embedding, params_nonembedding=pc.nonembedding,
                flops_per_token=fpt, tokens=d, flops=float(fpt * d), train_loss=loss + 0.02,
                val_loss=loss, val_ppl=float(np.exp(loss)), val_bpb=float(loss / np.log(2)),
                gpu_count=gpus, device_name="NVIDIA H100" if gpus else "cpu", world_size=1,
                wall_time_s=wall, gpu_hours=gpus * wall / 3600, tokens_per_s=d / wall,
                checkpoint_bytes=4 * pc.total + 512, data_source="synthetic",
                tokenizer_kind="bytes", data_entropy_bpb=float(FLOOR_NATS / np.log(2)),
                val_bytes_per_token=1.0,
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


def write_sweep(sweep_dir: Path, records, fit=True, metrics=True, bootstrap=10) -> Path:
    """results.csv (+ metrics.csv per run) and, with `fit`, the real fitter's fit.json."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for r in records:
        upsert_record(sweep_dir / "results.csv", r)
        if metrics:
            write_metrics(sweep_dir, r)
    if fit:
        fit_sweep(sweep_dir, bootstrap=bootstrap)
        # fresh (not older than results.csv), so plot/report use it instead of refitting
        t = max(os.stat(sweep_dir / "results.csv").st_mtime_ns,
                os.stat(sweep_dir / "fit.json").st_mtime_ns)
        os.utime(sweep_dir / "fit.json", ns=(t, t))
    return sweep_dir


def write_position_loss(sweep_dir: Path, rec: RunRecord, positions=(1, 2, 4, 8, 16, 32, 64)):
    """position_loss.csv (position, loss) as the trainer writes it: loss falls with context."""
    run = sweep_dir / rec.run_dir
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "position_loss.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["position", "loss"])
        for p in positions:
            w.writerow([p, f"{rec.val_loss + 1.0 / p:.4f}"])


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
