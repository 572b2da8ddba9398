#!/usr/bin/env python
"""Where the time of small runs and of the analysis goes, CPU-side, in CPU seconds (the
process's own clock: other work on a shared machine barely moves it). docs/gpu.md quotes it.

    python scripts/profile_cpu.py startup            # a pool worker's start-up, by piece
    python scripts/profile_cpu.py step [--hidden 32] # one quickstart-sized run, per step
    python scripts/profile_cpu.py analysis SWEEP_DIR # fit, plots, report (rewrites them there)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t: tuple[float, float]) -> str:
    w, c = clock()
    return f"wall {w - t[0]:.2f} s, CPU {c - t[1]:.2f} s"


def startup() -> None:
    """What a spawned worker pays before its first run, in the order it pays it."""
    t = clock()
    import torch  # noqa: F401

    print(f"import torch: {since(t)}")
    t = clock()
    import llmscale.train  # noqa: F401

    print(f"import llmscale.train: {since(t)}")
    t = clock()
    from llmscale.hardware import warm_up

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    warm_up(device)
    print(f"warm_up({device}) (CUDA: context, cuBLAS, cuDNN): {since(t)}")


STEP_FUNCTIONS = ("train_step", "backward", "forward_with_state", "cross_entropy", "zero_grad",
                  "clip_grad_norm_", "step", "get", "lr_at", "_append_metrics")


def step(hidden: int) -> None:
    """cProfile (CPU clock) of one run of the quickstart's shape at `hidden`, one thread."""
    import torch

    from llmscale.config import load_config
    from llmscale.train import train_run

    torch.set_num_threads(1)
    cfg = load_config(str(REPO / "configs/quickstart.yaml"),
                      [f"model.hidden_dim={hidden}", f"model.embedding_dim={hidden}",
                       "train.tokens=409600"])
    with tempfile.TemporaryDirectory() as tmp:
        train_run(cfg, Path(tmp) / "warm", "cpu", progress=False)  # data cache, CPU peak
        prof = cProfile.Profile(time.process_time)
        rec = prof.runcall(train_run, cfg, Path(tmp) / "run", "cpu", progress=False)
    steps = rec.tokens // (cfg.train.batch_size * cfg.train.seq_len)
    print(f"H{hidden}, batch {cfg.train.batch_size} x {cfg.train.seq_len}, vocab "
          f"{cfg.vocab_size}, {steps} steps: record setup {rec.setup_s:.2f} s, train "
          f"{rec.train_time_s:.2f} s ({rec.train_time_s / steps * 1e3:.2f} ms per step, wall), "
          f"eval {rec.eval_time_s:.2f} s, checkpoint {rec.checkpoint_time_s:.2f} s")
    stats = pstats.Stats(prof).stats
    loop = max(v[3] for k, v in stats.items() if k[2] == "_loop")
    print(f"  _loop: {loop / steps * 1e3:.2f} ms of CPU per step (under cProfile)")
    for (path, line, name), v in sorted(stats.items(), key=lambda kv: -kv[1][3]):
        if name in STEP_FUNCTIONS and v[1] >= steps:
            print(f"  {name:>18} ({Path(path).name}:{line}): {v[3] / steps * 1e3:.3f} ms per step")


def analysis(sweep_dir: Path) -> None:
    """The three stages of `llmscale sweep`'s analysis, each timed, as the sweep runs them."""
    from llmscale.analysis import load_sweep, refit_sweep
    from llmscale.fit.robust import serial_blas
    from llmscale.plots import make_plots
    from llmscale.report import write_report

    with serial_blas():
        t = clock()
        note = refit_sweep(sweep_dir)
        print(f"fit (bootstrap included){' (' + note + ')' if note else ''}: {since(t)}")
        data = load_sweep(sweep_dir, refit=False)
        t = clock()
        make_plots(sweep_dir, data)
        print(f"plots: {since(t)}")
        t = clock()
        write_report(sweep_dir, data)
        print(f"report (reuses the figures): {since(t)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("startup")
    p = sub.add_parser("step")
    p.add_argument("--hidden", type=int, default=32)
    p = sub.add_parser("analysis")
    p.add_argument("sweep_dir", type=Path)
    args = ap.parse_args()
    if args.what == "startup":
        startup()
    elif args.what == "step":
        step(args.hidden)
    else:
        analysis(args.sweep_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
