"""What a sweep will cost before it runs: time per run, the sweep's wall time on its parallel
slots, GPU-hours, checkpoint disk, and each run's memory. Pure arithmetic over the accounting
and (when there are any) the sweep's own completed records; no torch.

Time model, per run: `setup + steps x step_overhead + (train + eval FLOPs) / rate`.
`rate` (achieved FLOP/s) and `step_overhead` (seconds per optimizer step that do not scale with
FLOPs: Python, the optimizer, kernel launches) are fitted by least squares to the completed
runs of the same device class (cpu or cuda) when there are at least two of different sizes;
otherwise the ASSUMED figures below are used and the estimate says so.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass

from llmscale.accounting import RunAccounting
from llmscale.config import RunConfig
from llmscale.records import RunRecord

# Assumed when nothing is measured yet; the estimate says so. CPU, on the 2-core Zen 5 box
# (torch 2.13 CPU, 2026-11-29): the first quickstart (27 runs, one process, 4.1e13 training
# FLOPs, 30.8k steps) took 583 s on a quiet machine (DESIGN.md), its smallest run stepping at
# 235k tokens/s (4.4 ms per 1024-token step, ~1 ms of it FLOPs); the current one (26 runs, two
# single-thread workers, 7.9e12 FLOPs, 19.3k steps) used 306 s of CPU (`/usr/bin/time`, a
# loaded machine). ~3 ms per step that does not scale with FLOPs and ~8e10 FLOP/s for the rest
# fit both within 15%. CUDA: a round figure for what a small LSTM achieves on a current
# data-centre GPU (far below its peak).
ASSUMED = {
    "cpu": {"rate": 8.0e10, "step_overhead_s": 3.0e-3, "setup_s": 0.5},
    "cuda": {"rate": 1.0e13, "step_overhead_s": 5.0e-3, "setup_s": 10.0},
}
# The analysis after a sweep (fit with bootstrap, figures, report), seconds: base + per run.
# Measured: 10.8 s of CPU for the 26-run quickstart (2026-11-29).
ANALYSIS_S = (5.0, 0.4)
BYTES_PER_PARAM_TRAIN = 16  # fp32 weights 4 + gradients 4 + AdamW moments 8
BYTES_PER_PARAM_CHECKPOINT = 12  # one checkpoint: safetensors weights 4 + AdamW moments 8


@dataclass(frozen=True)
class Rate:
    device: str  # cpu | cuda
    flops_per_s: float
    step_overhead_s: float
    setup_s: float
    how: str  # one line: measured from N runs, or the assumption

    def run_seconds(self, cfg: RunConfig, acc: RunAccounting,
                    slots: Slots | None = None) -> float:
        steps = max(1, acc.tokens // (cfg.train.batch_size * cfg.train.seq_len))
        flops = acc.flops + eval_flops(cfg, acc)
        step_slow, flop_slow = (slots.step_slowdown, slots.flop_slowdown) if slots else (1.0, 1.0)
        return (self.setup_s + step_slow * steps * self.step_overhead_s
                + flop_slow * flops / self.flops_per_s)


def eval_flops(cfg: RunConfig, acc: RunAccounting) -> float:
    """Forward FLOPs of the run's evaluations (a third of the training FLOPs per token)."""
    every = cfg.eval.every_tokens or max(cfg.train.batch_size * cfg.train.seq_len, acc.tokens // 10)
    n_evals = acc.tokens // max(1, every) + 1
    return n_evals * cfg.eval.tokens * acc.flops_per_token / 3


def device_class(rec: RunRecord) -> str:
    return "cuda" if (rec.gpu_count or 0) > 0 else "cpu"


def _usable(rec: RunRecord) -> bool:
    return (rec.status == "completed" and bool(rec.flops) and bool(rec.tokens)
            and bool(rec.batch_size) and bool(rec.seq_len)
            and bool(rec.train_time_s or rec.wall_time_s))


def measured_rate(records: list[RunRecord], device: str) -> Rate | None:
    """Fit (step_overhead, 1/rate) to train_time = steps x overhead + flops / rate over the
    completed runs of `device`; None when there are none."""
    runs = [r for r in records if _usable(r) and device_class(r) == device]
    if not runs:
        return None
    rows = []
    for r in runs:
        steps = max(1, r.tokens // (r.batch_size * r.seq_len))
        train_s = r.train_time_s if r.train_time_s else r.wall_time_s
        rows.append((steps, float(r.flops), float(train_s)))
    overhead, inv_rate = _fit_nonneg(rows)
    setup = sorted(r.wall_time_s - (r.train_time_s or r.wall_time_s) for r in runs)[len(runs) // 2]
    n = len(runs)
    return Rate(device, 1.0 / inv_rate, overhead, max(0.0, setup),
                f"measured on {n} completed {device} run(s) of this sweep: "
                f"{1.0 / inv_rate:.3g} FLOP/s, {overhead * 1e3:.2g} ms per step, "
                f"{max(0.0, setup):.3g} s set-up per run")


def _fit_nonneg(rows: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Least squares t = a*steps + b*flops with a, b >= 0, relative residuals (each run counts
    alike, whatever its length). Falls back to b alone (a = 0) when a would be negative."""
    def solve_b_only() -> tuple[float, float]:
        return 0.0, sum(t / f for _, f, t in rows) / len(rows)

    if len(rows) < 2:
        return solve_b_only()
    # weights 1/t: minimise sum((a*s + b*f - t) / t)^2
    s_ss = sum((s / t) ** 2 for s, f, t in rows)
    s_ff = sum((f / t) ** 2 for s, f, t in rows)
    s_sf = sum(s * f / t**2 for s, f, t in rows)
    s_s1 = sum(s / t for s, f, t in rows)
    s_f1 = sum(f / t for s, f, t in rows)
    det = s_ss * s_ff - s_sf**2
    if det <= 1e-12 * s_ss * s_ff:
        return solve_b_only()
    a = (s_s1 * s_ff - s_f1 * s_sf) / det
    b = (s_ss * s_f1 - s_sf * s_s1) / det
    if a < 0 or b <= 0:
        return solve_b_only()
    return a, b


def assumed_rate(device: str) -> Rate:
    a = ASSUMED[device]
    return Rate(device, a["rate"], a["step_overhead_s"], a["setup_s"],
                f"an assumed {device} rate (nothing of this sweep measured yet): "
                f"{a['rate']:.3g} FLOP/s, {a['step_overhead_s'] * 1e3:.2g} ms per step, "
                f"{a['setup_s']:.3g} s set-up per run")


def rate_for(records: list[RunRecord], device: str) -> Rate:
    return measured_rate(records, device) or assumed_rate(device)


# --------------------------------------------------------------------------------------------
# Slots: where the runs execute at once


@dataclass(frozen=True)
class Slots:
    device: str  # cpu | cuda
    n: int  # runs at once
    gpus_per_run: int  # for GPU-hours
    # CPU workers on one machine share its FLOP rate (each gets 1/n of it), while the per-step
    # overhead (Python, the optimizer: one core each) slows only when there are more workers
    # than cores. GPU slots: runs sharing one GPU share its rate.
    flop_slowdown: float
    step_slowdown: float
    how: str


def local_slots(devices: str | None, runs_per_device: int) -> Slots:
    """--devices / --runs-per-device of the local executor, without importing torch."""
    names = [d.strip() for d in (devices or "auto").split(",") if d.strip()]
    if names == ["auto"]:
        gpus = _gpu_count()  # no --devices: one run on GPU 0; --devices auto: one per GPU
        names = ["cpu"] if not gpus else (
            [f"cuda:{i}" for i in range(gpus)] if devices == "auto" else ["cuda:0"])
    n = len(names) * runs_per_device
    if all(d == "cpu" for d in names):
        cores = os.cpu_count() or 1
        return Slots("cpu", n, 0, float(n), max(1.0, n / cores),
                     f"{n} CPU worker(s) sharing this machine's {cores} cores" if n > 1 else
                     "one run at a time on the CPU")
    return Slots("cuda", n, 1, float(runs_per_device), 1.0,
                 f"{len(names)} GPU(s) x {runs_per_device} run(s) each")


def slurm_slots(cfg: RunConfig, n_runs: int) -> Slots:
    s = cfg.sweep.slurm
    n = min(n_runs, s.max_parallel) if s.max_parallel else n_runs
    dev = "cuda" if s.gpus_per_run > 0 else "cpu"
    cap = (f"sweep.slurm.max_parallel = {s.max_parallel}" if s.max_parallel
           else "no max_parallel: every task at once, if the cluster grants them")
    return Slots(dev, max(1, n), s.gpus_per_run, 1.0, 1.0,
                 f"SLURM, {n} array task(s) at once ({cap}), {s.gpus_per_run} GPU(s) per run")


def _gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def analysis_seconds(n_runs: int) -> float:
    base, per_run = ANALYSIS_S
    return base + per_run * n_runs


def makespan(seconds: list[float], slots: int) -> float:
    """Wall time of `seconds` jobs on `slots` workers taking the next job when free (longest
    first, as the plan lists sizes)."""
    loads = [0.0] * max(1, slots)
    for s in sorted(seconds, reverse=True):
        i = loads.index(min(loads))
        loads[i] += s
    return max(loads)


# --------------------------------------------------------------------------------------------
# Memory


@dataclass(frozen=True)
class Memory:
    state_bytes: int  # weights + gradients + AdamW moments
    activation_bytes: int  # one micro-batch's saved activations and logits (fp32)

    @property
    def total(self) -> int:
        return self.state_bytes + self.activation_bytes


def memory_estimate(cfg: RunConfig, acc: RunAccounting) -> Memory:
    """Training memory of one rank, fp32 (bf16 autocast needs less): 16 bytes per parameter
    plus what backward keeps per token: embeddings, per-layer states, and the logits (three
    copies of B x T x V: logits, log-softmax, their gradient)."""
    m, tr = cfg.model, cfg.train
    tokens = (tr.micro_batch_size or tr.batch_size) * tr.seq_len
    per_layer = {"lstm": 7 * m.hidden_dim, "gru": 6 * m.hidden_dim}.get(
        m.kind, 16 * m.hidden_dim + 2 * m.num_heads * tr.seq_len)
    per_token = m.embedding_dim + m.num_layers * per_layer + 3 * cfg.vocab_size
    return Memory(BYTES_PER_PARAM_TRAIN * acc.params_total, 4 * tokens * per_token)


def available_memory(device: str, cfg: RunConfig | None = None,
                     slurm: bool = False) -> tuple[int | None, str]:
    """Bytes one run may use, and where that figure comes from (None: unknown)."""
    if slurm and cfg is not None and device == "cpu":
        return cfg.sweep.slurm.mem_gb * 10**9, "sweep.slurm.mem_gb"
    if device == "cpu" and not slurm:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
        except (ValueError, OSError):
            return None, ""
    if device == "cuda" and not slurm and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                                  "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20).stdout.split()
            return int(float(out[0]) * 2**20), "GPU 0's memory (nvidia-smi)"
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            return None, ""
    return None, ""


def checkpoint_disk_bytes(acc: RunAccounting, keep: int) -> int:
    """Disk a run's checkpoints take once it has saved `keep` (output.keep_checkpoints) of them:
    `keep` x 12 bytes per parameter. Each checkpoint also holds RNG states, metrics rows and a
    manifest (tens of kB), left out; the record's checkpoint_disk_bytes is the measurement."""
    return keep * BYTES_PER_PARAM_CHECKPOINT * acc.params_total


def fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        m, s = divmod(round(seconds), 60)
        return f"{m}m{s:02d}s" if m < 10 else f"{m}m"
    return f"{seconds / 3600:.1f}h"
