"""`llmscale bench sweep`: what the sweep machinery costs on top of training.

1. Overhead: a 12-run sweep of tiny models, in-process (the default local executor). Figure:
   total sweep wall time / sum of the runs' own wall_time_s (as train_run measured them).
   Target <= 1.10. Importing torch happens once per process and is shown separately.
2. A second `llmscale sweep` of the finished sweep (a fresh interpreter, as a user runs it),
   which must skip every run without touching it. Target < 2 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def _config(tokens: int) -> dict:
    return {
        "name": "bench-sweep",
        "data": {"source": "synthetic", "synthetic_tokens": 20_000, "synthetic_val_tokens": 1000,
                 "synthetic_vocab": 256},
        "tokenizer": {"kind": "bytes", "vocab_size": None},
        "model": {"embedding_dim": 16, "hidden_dim": 16, "num_layers": 1},
        "train": {"tokens": tokens, "batch_size": 8, "seq_len": 32, "lr": 1.0e-2},
        "eval": {"tokens": 2048},
        "sweep": {"grid": {"model.hidden_dim": [16, 24, 32], "model.num_layers": [1, 2],
                           "train.lr": [0.01, 0.02]},
                  "derived": {"model.embedding_dim": "model.hidden_dim"}},
    }


def main(quick: bool = False) -> None:
    from llmscale.config import from_dict
    from llmscale.sweep import plan_sweep, run_sweep

    tokens = 8_192 if quick else 32_768
    with tempfile.TemporaryDirectory(prefix="llmscale-bench-sweep-") as tmp:
        root = Path(tmp)
        os.environ["LLMSCALE_CACHE"] = str(root / "cache")
        raw = _config(tokens)
        cfg_path = root / "sweep.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        cfg = from_dict(raw)
        out = root / "out"
        n = len(plan_sweep(cfg, log=lambda _: None))

        t0 = time.perf_counter()
        import llmscale.train  # noqa: F401 - torch and friends, once per process

        t_import = time.perf_counter() - t0
        t0 = time.perf_counter()
        records = run_sweep(cfg, out, progress=False)
        total = time.perf_counter() - t0
        own = sum(r.wall_time_s or 0.0 for r in records)
        statuses = sorted({r.status for r in records})

        cmd = [sys.executable, "-m", "llmscale", "sweep", str(cfg_path), "--out", str(out),
               "--no-analysis"]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        t_python = time.perf_counter() - t0

    print(f"sweep overhead: {n} runs x {tokens:,} tokens (tiny LSTMs, CPU, in-process), "
          f"statuses {statuses}")
    print(f"  total sweep wall time      {total:8.2f} s")
    print(f"  sum of runs' wall_time_s   {own:8.2f} s")
    print(f"  ratio (target <= 1.10)     {total / own:8.3f}")
    print(f"  torch/train import, once   {t_import:8.2f} s (not in the ratio)")
    print("second invocation of the finished sweep (fresh `python -m llmscale sweep`):")
    print(f"  best of 3 (target < 2 s)   {min(times):8.2f} s  (all: "
          f"{', '.join(f'{t:.2f}' for t in times)}; bare `python -c pass`: {t_python:.2f} s)")
