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
from dataclasses import dataclass

from llmscale.accounting import RunAccounting
from llmscale.config import RunConfig
from llmscale.records import RunRecord
from llmscale.sweep import slots

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


def local_slots(devices: str | None, runs_per_device: int | str,
                runs: list[tuple[RunConfig, RunAccounting]] = (),
                records: list[RunRecord] = ()) -> Slots:
    """--devices / --runs-per-device of the local executor (slots.expand, as the executors
    expand them), without importing torch. `runs` (the runs left) and `records` (the sweep's
    completed runs) feed `--runs-per-device auto`'s rule."""
    names = slots.device_names(devices)
    how = ""
    if runs_per_device == slots.AUTO:
        kind = slots.kind(names)
        packing = auto_packing(kind, len(names), list(runs), rate_for(list(records), kind))
        runs_per_device, how = packing.runs_per_device, f"; {packing.why}"
    n = len(slots.expand(names, runs_per_device))
    if slots.kind(names) == "cpu":
        cores = os.cpu_count() or 1
        return Slots("cpu", n, 0, float(n), max(1.0, n / cores),
                     (f"{n} CPU worker(s) sharing this machine's {cores} cores" if n > 1 else
                      "one run at a time on the CPU") + how)
    return Slots("cuda", n, 1, float(runs_per_device), 1.0,
                 f"{len(names)} GPU(s) x {runs_per_device} run(s) each" + how)


# --------------------------------------------------------------------------------------------
# --runs-per-device auto

# Assumed, not yet measured on a GPU: the device memory one worker holds before any run (its
# CUDA context, cuBLAS and cuDNN handles and workspaces), typically 0.5-1 GiB.
WORKER_BYTES = 2**30
MEMORY_FRACTION = 0.9  # of a device's memory that packed runs may plan to fill


@dataclass(frozen=True)
class Packing:
    runs_per_device: int
    why: str  # one line: each limit and where its figures come from


def utilisation(cfg: RunConfig, acc: RunAccounting, rate: Rate) -> float:
    """The share of a run's time its device computes, by the time model: FLOP time over FLOP
    time plus the per-step overhead (Python, launches: the device waits for the host)."""
    steps = max(1, acc.tokens // (cfg.train.batch_size * cfg.train.seq_len))
    compute = (acc.flops + eval_flops(cfg, acc)) / rate.flops_per_s
    return compute / (compute + steps * rate.step_overhead_s)


def auto_packing(kind: str, n_devices: int, runs: list[tuple[RunConfig, RunAccounting]],
                 rate: Rate | None, *, device_bytes: int | None | str = "ask",
                 cores: int | None = None) -> Packing:
    """How many runs share each device under `--runs-per-device auto`.

    CPU: one single-threaded worker per core (a run's step keeps its core busy), at most as
    many as fit in the machine's memory, and no more than there are runs.
    GPU: the least of
      - memory: floor(0.9 x device memory / (the largest run's training memory + WORKER_BYTES));
      - utilisation: floor(1 / u), u = the busiest run's device share by the time model
        (`utilisation`), so the packed runs together ask at most the whole device; with no
        rate (nothing measured yet) this limit is 1;
      - CPU cores: each worker drives its device from one core;
      - runs: no more workers than runs per device.
    """
    cores = cores or os.cpu_count() or 1
    n_devices = max(1, n_devices)
    per_runs = max(1, math.ceil(len(runs) / n_devices))
    need = max((memory_estimate(c, a).total for c, a in runs), default=0)
    if device_bytes == "ask":
        device_bytes = (available_memory("cpu")[0] if kind == "cpu"
                        else slots.gpu_memory_bytes(0))
    per_core = max(1, cores // n_devices)
    if kind == "cpu":
        by_memory = (max(1, int(MEMORY_FRACTION * device_bytes // need))
                     if device_bytes and need else per_core)
        k = max(1, min(per_core, by_memory, per_runs))
        return Packing(k, f"auto: {k} CPU worker(s) = min(cores {per_core}, memory {by_memory}, "
                          f"runs {per_runs})")
    if device_bytes:
        by_memory = max(1, int(MEMORY_FRACTION * device_bytes // (need + WORKER_BYTES)))
        mem_why = (f"memory {by_memory} ({fmt_bytes(need)} per run + {fmt_bytes(WORKER_BYTES)} "
                   f"per worker in {MEMORY_FRACTION:g} x {fmt_bytes(device_bytes)})")
    else:
        by_memory, mem_why = 1, "memory 1 (the GPU's memory is unknown: no nvidia-smi)"
    if rate is None or not runs:
        by_use, use_why = 1, "utilisation 1 (not measured yet)"
    else:
        u = max(utilisation(c, a, rate) for c, a in runs)
        by_use = max(1, math.floor(1.0 / u + 1e-9))
        use_why = f"utilisation {by_use} (the busiest run computes {u:.0%} of its time; {rate.how})"
    k = max(1, min(by_memory, by_use, per_core, per_runs))
    return Packing(k, f"auto: {k} run(s) per GPU = min({mem_why}, {use_why}, cores {per_core}, "
                      f"runs {per_runs})")


def slurm_slots(cfg: RunConfig, n_runs: int) -> Slots:
    s = cfg.sweep.slurm
    n = min(n_runs, s.max_parallel) if s.max_parallel else n_runs
    dev = "cuda" if s.gpus_per_run > 0 else "cpu"
    cap = (f"sweep.slurm.max_parallel = {s.max_parallel}" if s.max_parallel
           else "no max_parallel: every task at once, if the cluster grants them")
    return Slots(dev, max(1, n), s.gpus_per_run, 1.0, 1.0,
                 f"SLURM, {n} array task(s) at once ({cap}), {s.gpus_per_run} GPU(s) per run")


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
    if device == "cuda" and not slurm:
        total = slots.gpu_memory_bytes(0)
        return (total, "GPU 0's memory (nvidia-smi)") if total else (None, "")
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
