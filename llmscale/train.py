"""One training run: `train_run(cfg, out_dir, device) -> RunRecord`.

The loop in `train_run` reads top to bottom: set up (device, DDP, seeds, data, model,
optimizer), resume if a checkpoint is there, then step / log / evaluate / checkpoint until the
token budget is spent, and write the record. Every terminal status (completed, diverged, oom,
preempted, failed) ends with `record.json`; only user mistakes raise (`UserError`).

Truncated BPTT, as the data arrives (TokenStream): each of the B rows of a batch is its own
contiguous stream, and batch `step + 1` continues every row where batch `step` stopped:

    row 0:  [ t0 ... t63 ][ t64 ... t127 ][ ...      one row = one stream, T = seq_len
    row 1:  [ u0 ... u63 ][ u64 ... u127 ][ ...
              step 0         step 1

So the LSTM state at the end of a step is the right initial state for the next one. We carry
it over but *detach* it: gradients stop at the segment boundary (that is what makes the
backprop "truncated") while the memory flows on. When the stream wraps to a new epoch
(`reset`), the state is zeroed.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import functools
import io
import json
import logging
import math
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmscale import checkpoint as ckpt
from llmscale.accounting import run_accounting
from llmscale.config import RunConfig, config_hash, dump_yaml
from llmscale.errors import UserError
from llmscale.model import LargeLanguageModel, build_model
from llmscale.records import RunRecord, atomic_write_text, read_record_json, write_json

log = logging.getLogger("llmscale.train")

METRICS_COLUMNS = ("step", "tokens", "train_loss", "val_loss", "lr", "grad_norm",
                   "tokens_per_s", "elapsed_s")
RECORD_FILE = "record.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"

# Peak dense-matmul FLOP/s of known accelerators, by precision (vendor datasheets, dense, no
# sparsity). Matched by substring of torch.cuda.get_device_name(), first match wins, so the
# more specific names come first.
GPU_PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 494.7e12}),  # TF32 tensor cores
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 378e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 494.7e12}),  # SXM
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12}),
    ("L40S", {"bf16": 362e12, "fp16": 362e12, "fp32": 183e12}),
    ("A10G", {"bf16": 70e12, "fp16": 70e12, "fp32": 35e12}),
    ("V100", {"bf16": 125e12, "fp16": 125e12, "fp32": 15.7e12}),  # bf16 falls back; rough
    ("T4", {"bf16": 65e12, "fp16": 65e12, "fp32": 8.1e12}),
)


# ------------------------------------------------------------------------------------------
# Small pure pieces


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to a floor.

    Warmup goes from lr/warmup_steps to lr; the cosine then decays to min_lr_ratio*lr at the
    last step (the floor is ~lr/10 per Chinchilla by default).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    floor = min_lr_ratio * lr
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """AdamW groups: weight decay on matrices; none on biases and embeddings unless asked.

    Decaying embeddings pulls rare tokens' vectors to zero, and biases are offsets, not
    capacities: the usual practice (nanoGPT, Chinchilla) leaves both undecayed.
    """
    decay, no_decay = [], []
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                     for p in m.parameters()}
    for _name, p in model.named_parameters():  # tied weights appear once
        if decay_all or (p.ndim >= 2 and id(p) not in embedding_ids):
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device
                   ) -> torch.optim.Optimizer:
    tr = cfg.train
    groups = param_groups(model, tr.weight_decay, tr.decay_embeddings_and_biases)
    kwargs = dict(lr=tr.lr, betas=(tr.beta1, tr.beta2), eps=1e-8)
    try:
        # One fused kernel over all parameters: fewer passes over memory than the per-tensor loop.
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=device.type == "cuda", **kwargs)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision: fp16 needs a CUDA device (got {device}); "
                        f"use fp32 or bf16 on CPU")
    return precision


def autocast_for(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], *, micro: int,
               grad_clip: float, precision: str, scaler=None, want_norm: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
    """One optimizer step over this rank's rows `x`, `y` (B, T), accumulating `micro` rows at once.

    `state` is the carried (h, c), (layers, B, hidden), detached; each micro-batch uses its own
    rows of it, so accumulation does not change the maths. Returns (mean loss as a 0-d tensor,
    the gradient norm or None, the new detached state). No host syncs: `.item()` is the
    caller's choice (at logging intervals only).
    """
    rows = x.shape[0]
    n_micro = rows // micro
    h, c = state
    new_h, new_c = torch.empty_like(h), torch.empty_like(c)
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float32)
    autocast = autocast_for(precision, x.device)
    for i in range(n_micro):
        sl = slice(i * micro, (i + 1) * micro)
        # DDP all-reduces gradients on the last micro-batch only (no_sync on the others).
        sync = i == n_micro - 1 or not hasattr(model, "no_sync")
        with (contextlib.nullcontext() if sync else model.no_sync()):
            with autocast:
                logits, (hs, cs) = model(x[sl], (h[:, sl], c[:, sl]))
                # Under autocast cross_entropy runs in fp32 (autocast's fp32 list): no copy needed.
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[sl].reshape(-1))
            scaled = loss / n_micro
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        new_h[:, sl], new_c[:, sl] = hs.detach(), cs.detach()
        loss_sum += loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    elif want_norm:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / n_micro, norm, (new_h, new_c)


class _StatefulForward(torch.nn.Module):
    """model(x, state) -> (logits, state): DDP wraps this so its hooks see the real forward."""

    def __init__(self, model: LargeLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, x, state):
        return self.model.forward_with_state(x, state)


@torch.no_grad()
def evaluate(model: LargeLanguageModel, val: torch.Tensor, batch_size: int, seq_len: int,
             precision: str) -> float:
    """Mean next-token loss (nats/token) over the fixed held-out tokens `val`, state carried.

    `val` is split into `batch_size` contiguous streams read seq_len tokens at a time, the same
    way training reads, so the model is scored with the memory it is trained to use.
    """
    was_training = model.training
    model.eval()
    n = val.numel()
    rows = max(1, min(batch_size, (n - 1) // 2))
    length = (n - 1) // rows  # tokens per stream, predicting each from the previous ones
    streams = val[: rows * length + 1]
    xs = streams[:-1].view(rows, length)
    ys = streams[1:].view(rows, length)
    state = None
    total = torch.zeros((), dtype=torch.float64, device=val.device)
    with autocast_for(precision, val.device):
        for t in range(0, length, seq_len):
            logits, state = model.forward_with_state(xs[:, t:t + seq_len], state)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                     ys[:, t:t + seq_len].reshape(-1), reduction="sum")
    model.train(was_training)
    return float(total) / (rows * length)


# ------------------------------------------------------------------------------------------
# Devices, peaks, provenance


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world_size: int
    made_group: bool  # we initialised the process group, so we destroy it


def setup_distributed(device_arg: str) -> tuple[Dist, torch.device]:
    """Rank/world from the env (torchrun, or submitit's exported env); init DDP when > 1."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_arg, local_rank)
    made = False
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        made = True
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return Dist(rank, local_rank, world, made), device


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available here; use cpu or auto")
        if device == "cuda":
            return torch.device(f"cuda:{local_rank}")
        try:
            idx = int(device.split(":", 1)[1])
        except ValueError:
            raise UserError(f"--device {device!r}: expected cuda:N with N an integer") from None
        if not 0 <= idx < torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
        return torch.device(device)
    raise UserError(f"--device {device!r}: allowed are auto, cpu, cuda, cuda:N")


@functools.cache
def cpu_matmul_peak() -> tuple[float, str]:
    """Measured fp32 matmul FLOP/s of this CPU with the fastest kernel available (once a process).

    oneDNN (`mkldnn_linear` on `.to_mkldnn()` tensors) beats the default MKL GEMM by ~2x on the
    AVX-512 machines we run on, so it is the honest ceiling; torch.mm is the fallback.
    """
    n = 1024
    gen = torch.Generator().manual_seed(0)  # never touch the global RNG: runs must replay exactly
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    candidates = []
    try:
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        candidates.append(("oneDNN mkldnn_linear fp32 matmul",
                           lambda: torch._C._nn.mkldnn_linear(am, bm, None)))
    except (RuntimeError, AttributeError):
        pass
    candidates.append(("torch.mm fp32 matmul", lambda: torch.mm(a, b)))
    best = (0.0, "unmeasured")
    for name, fn in candidates:
        try:
            fn()
            fn()  # warm up (kernel selection, page faults)
            reps, t0 = 0, time.perf_counter()
            while reps < 3 or time.perf_counter() - t0 < 0.08:
                fn()
                reps += 1
            rate = 2.0 * n ** 3 * reps / (time.perf_counter() - t0)
        except RuntimeError:
            continue
        if rate > best[0]:
            best = (rate, f"measured: {name}, {n}x{n}x{n}, {torch.get_num_threads()} threads")
    return best


def peak_flops(device: torch.device, precision: str) -> tuple[float | None, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, table in GPU_PEAK_FLOPS:
            if key in name:
                return table[precision], f"table: {key} {precision} dense"
        return None, f"unknown GPU {name!r}: no peak in the table"
    rate, source = cpu_matmul_peak()
    return (rate or None), source


def git_commit() -> str | None:
    """The commit of the llmscale checkout, best effort (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(),
                          "numpy": json.dumps(_np_state_plain(np.random.get_state())),
                          "python": json.dumps(_py_state_plain(random.getstate()))}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _np_state_plain(s):
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def _py_state_plain(s):
    return [s[0], list(s[1]), s[2]]


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    n = json.loads(st["numpy"])
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = json.loads(st["python"])
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


class _Signals:
    """SIGTERM / SIGUSR1 (SLURM preemption) and SIGINT (Ctrl-C) set a flag the loop checks:
    the step in flight finishes, then the run checkpoints and ends as preempted. The previous
    handlers are restored on exit."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self):
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _metrics_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(METRICS_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in METRICS_COLUMNS})
    return buf.getvalue()


def _fmt_row(r: dict[str, Any]) -> str:
    return ",".join("" if r.get(k) is None else str(r[k]) for k in METRICS_COLUMNS) + "\n"


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is KiB on Linux: the process's peak resident set.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Progress:
    """A tqdm bar on a terminal, plain log lines otherwise (or when progress is off)."""

    def __init__(self, total: int, done: int, enabled: bool, name: str):
        self.bar = None
        self.enabled = enabled
        self.name = name
        self.last_line = -math.inf  # perf_counter of the last plain log line
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="tok", unit_scale=True,
                            desc=name, dynamic_ncols=True, leave=True)

    def update(self, tokens_done: int, row: dict[str, Any], total: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = tokens_done
            post = {"loss": f"{row['train_loss']:.4f}", "tok/s": f"{row['tokens_per_s']:.0f}"}
            if row.get("val_loss") is not None:
                post["val"] = f"{row['val_loss']:.4f}"
            self.bar.set_postfix(post, refresh=True)
        elif (row.get("val_loss") is not None or tokens_done >= total
              or time.perf_counter() - self.last_line >= 10.0):
            # Plain lines (logs, not a terminal): at evals, the end, and at most every 10 s.
            self.last_line = time.perf_counter()
            val = f" val_loss {row['val_loss']:.4f}" if row.get("val_loss") is not None else ""
            print(f"[{self.name}] step {row['step']} tokens {tokens_done:,}/{total:,} "
                  f"loss {row['train_loss']:.4f}{val} lr {row['lr']:.3g} "
                  f"{row['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------
# The run


def train_run(cfg: RunConfig, out_dir: str | Path, device: str = "auto", *,
              progress: bool = True, stop_after_steps: int | None = None) -> RunRecord:
    """Train the run `cfg` describes in `out_dir` and return its record (also record.json).

    Resumes from `out_dir`'s checkpoint when it holds one of the same run; returns the stored
    record without training when the run is already completed there. `stop_after_steps`
    checkpoints and stops (status preempted) after that many optimizer steps of this call:
    the same path a SIGTERM takes, used to test exact resume.
    """
    out = Path(out_dir)
    run_id = cfg.run_id
    record_path = out / RECORD_FILE
    if record_path.is_file():
        try:
            old = read_record_json(record_path)
        except (ValueError, TypeError, OSError):
            old = None
        if old is not None and old.run_id == run_id and old.status == "completed":
            return old
        if old is not None and old.run_id != run_id:
            raise UserError(f"{str(out)!r} holds run {old.run_id}, not {run_id}; "
                            f"use another --out directory (runs are never mixed)")
    if ckpt.has_checkpoint(out):
        resume = ckpt.load_trainer_state(out)
        if resume.get("run_id") != run_id:
            raise UserError(f"{str(out / ckpt.CHECKPOINT_DIR)!r} is a checkpoint of run "
                            f"{resume.get('run_id')}, not {run_id}; use another --out directory "
                            f"(runs are never mixed)")
    else:
        resume = None

    dist_info, dev = setup_distributed(device)
    try:
        return _train(cfg, out, dev, dist_info, resume, progress=progress,
                      stop_after_steps=stop_after_steps)
    finally:
        if dist_info.made_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: RunConfig, out: Path, device: torch.device, dist_info: Dist,
           resume: dict[str, Any] | None, *, progress: bool,
           stop_after_steps: int | None) -> RunRecord:
    import torch.distributed as dist

    from llmscale.data import load_tokens
    from llmscale.data.batches import TokenStream

    tr, rank, world = cfg.train, dist_info.rank, dist_info.world_size
    is_main = rank == 0
    run_id = cfg.run_id
    precision = resolve_precision(tr.precision, device)
    t_start = time.perf_counter()
    started_at = resume["started_at"] if resume else _now()

    # -- batch geometry: global batch = world x rows per rank = world x accum x micro
    if tr.batch_size % world:
        raise UserError(f"train.batch_size: {tr.batch_size} is not divisible by the world size "
                        f"{world}; use a multiple of {world}")
    rows = tr.batch_size // world
    micro = tr.micro_batch_size or rows
    if micro > rows or rows % micro:
        raise UserError(f"train.micro_batch_size: {micro} must divide the rows per rank "
                        f"({tr.batch_size} / {world} ranks = {rows})")

    # -- budget (accounting is the one source of the planned tokens and FLOPs per token)
    acc = run_accounting(cfg)
    tokens_per_step = tr.batch_size * tr.seq_len  # all ranks together
    total_steps = max(1, acc.tokens // tokens_per_step)
    warmup_steps = int(tr.warmup_frac * total_steps)
    # train_loss in the record = mean loss over the last ~5% of steps (smoother than one step).
    tail_start = total_steps - max(1, math.ceil(0.05 * total_steps))
    eval_every_tokens = cfg.eval.every_tokens or max(tokens_per_step, acc.tokens // 10)
    eval_every = max(1, eval_every_tokens // tokens_per_step)  # steps
    ckpt_every = (max(1, cfg.output.checkpoint_every_tokens // tokens_per_step)
                  if cfg.output.checkpoint_every_tokens else None)
    log_every = cfg.output.log_every_steps

    # -- data, model, optimizer (seeded: weights, dropout and data order follow train.seed)
    _seed_everything(tr.seed)
    data = load_tokens(cfg, progress=progress and is_main)
    if data.vocab_size != cfg.vocab_size:
        raise UserError(f"token cache vocab_size {data.vocab_size} != config's {cfg.vocab_size}")
    stream = TokenStream(data.train, rows, tr.seq_len, rank=rank, world_size=world,
                         seed=tr.seed, shuffle_epochs=True)
    n_val = min(cfg.eval.tokens + 1, len(data.val))
    if n_val < 3:
        raise UserError(f"the validation split has {len(data.val)} tokens; need at least 3")
    val = torch.from_numpy(np.asarray(data.val[:n_val], dtype=np.int64)).to(device)
    eval_bs = cfg.eval.batch_size or tr.batch_size

    model = build_model(cfg).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.enabled = True  # nn.LSTM runs the fused cuDNN kernel
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    state = model.init_state(rows, device)
    step, metrics, tail_sum = 0, [], 0.0
    prev_elapsed = 0.0
    last_good = {"train_loss": None, "val_loss": None}
    if resume is not None:
        ckpt.load_weights(out, model)
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        step = int(resume["step"])
        metrics = list(resume["metrics"])
        tail_sum = float(resume["tail_sum"])
        prev_elapsed = float(resume["elapsed_s"])
        last_good = dict(resume["last_good"])
        full_h, full_c = resume["lstm_state"]  # global rows; this rank's are [rank*rows, ...)
        sl = slice(rank * rows, (rank + 1) * rows)
        state = (full_h[:, sl].to(device).contiguous(), full_c[:, sl].to(device).contiguous())
        _set_rng_state(resume["rng"])
    ddp_model: torch.nn.Module = _StatefulForward(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(ddp_model, device_ids=[device.index] if device.type == "cuda" else None)

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG_FILE, f"# run_id: {run_id}\n" + dump_yaml(cfg))
        atomic_write_text(out / METRICS_FILE, _metrics_text(metrics))
    peak, peak_source = peak_flops(device, precision)
    bar = _Progress(total_steps * tokens_per_step, step * tokens_per_step,
                    progress and is_main, cfg.name)

    def gather_state() -> tuple[torch.Tensor, torch.Tensor]:
        """The carried LSTM state of all ranks' rows, on CPU (rank 0 saves it)."""
        if world == 1:
            return state[0].cpu(), state[1].cpu()
        parts = []
        for t in state:
            chunks = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(chunks, t.contiguous())
            parts.append(torch.cat(chunks, dim=1).cpu())
        return parts[0], parts[1]

    def save(elapsed: float) -> int | None:
        full = gather_state()  # collective: every rank calls it
        if not is_main:
            return None
        trainer_state = {
            "run_id": run_id, "step": step, "total_steps": total_steps,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(), "lstm_state": full, "metrics": metrics,
            "tail_sum": tail_sum, "elapsed_s": elapsed, "started_at": started_at,
            "last_good": last_good,
            # the logging window in progress, so the next metrics row averages the same steps
            "loss_acc": loss_acc.detach().cpu().clone(), "steps_in_log": steps_in_log,
        }
        n = ckpt.save_checkpoint(out, model, trainer_state)
        atomic_write_text(out / METRICS_FILE, _metrics_text(metrics))  # drop rows past the ckpt
        return n

    # -- the loop
    status, error = "running", None
    tokens_at_log, t_log = step * tokens_per_step, time.perf_counter()
    loss_acc = torch.zeros((), device=device)
    steps_in_log = 0
    if resume is not None:
        loss_acc = resume["loss_acc"].to(device)
        steps_in_log = int(resume["steps_in_log"])
    last_ckpt_time = time.perf_counter()
    steps_this_call = 0
    with _Signals() as signals:
        try:
            model.train()
            while step < total_steps:
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step, total_steps, tr.lr, warmup_steps, tr.min_lr_ratio)
                x, y, reset = stream.batch(step)
                if reset:
                    state = model.init_state(rows, device)
                x = torch.as_tensor(x).to(device, non_blocking=True)
                y = torch.as_tensor(y).to(device, non_blocking=True)
                is_log = (step + 1) % log_every == 0 or step + 1 == total_steps
                loss, norm, state = train_step(ddp_model, optimizer, x, y, state, micro=micro,
                                               grad_clip=tr.grad_clip, precision=precision,
                                               scaler=scaler, want_norm=is_log)
                if step >= tail_start:
                    tail_loss = loss.detach().clone()
                    if world > 1:  # the global batch's loss, not this rank's rows
                        dist.all_reduce(tail_loss)
                        tail_loss /= world
                    tail_sum += float(tail_loss)
                loss_acc += loss
                steps_in_log += 1
                step += 1
                steps_this_call += 1

                is_eval = step % eval_every == 0 or step == total_steps
                if is_log or is_eval:
                    mean_loss = loss_acc / steps_in_log
                    if world > 1:
                        dist.all_reduce(mean_loss)
                        mean_loss /= world
                    train_loss = float(mean_loss)
                    if not math.isfinite(train_loss):
                        status = "diverged"
                        error = (f"non-finite training loss ({train_loss}) by step {step}; "
                                 f"lower train.lr (now {tr.lr:g}) or enable train.grad_clip")
                        break
                    now = time.perf_counter()  # before eval: tokens/s is training speed
                    val_loss = None
                    if is_eval:
                        val_loss = evaluate(model, val, eval_bs, tr.seq_len, precision)
                        if not math.isfinite(val_loss):
                            status = "diverged"
                            error = f"non-finite validation loss at step {step}"
                            break
                        last_good["val_loss"] = val_loss
                    last_good["train_loss"] = train_loss
                    tokens_done = step * tokens_per_step
                    row = {"step": step, "tokens": tokens_done, "train_loss": train_loss,
                           "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"],
                           "grad_norm": float(norm) if norm is not None else None,
                           "tokens_per_s": (tokens_done - tokens_at_log) / max(now - t_log, 1e-9),
                           "elapsed_s": prev_elapsed + now - t_start}
                    metrics.append(row)
                    if is_main:
                        with open(out / METRICS_FILE, "a", encoding="utf-8") as fh:
                            fh.write(_fmt_row(row))  # one short append; rewritten at checkpoints
                    bar.update(tokens_done, row, total_steps * tokens_per_step)
                    tokens_at_log, t_log = tokens_done, time.perf_counter()
                    loss_acc.zero_()
                    steps_in_log = 0

                # Decide together whether to stop or checkpoint, so every rank takes the same path.
                stop = signals.received is not None or (
                    stop_after_steps is not None and steps_this_call >= stop_after_steps)
                due = (time.perf_counter() - last_ckpt_time) / 60 >= cfg.output.checkpoint_every_minutes
                due = due or (ckpt_every is not None and step % ckpt_every == 0)
                if world > 1:
                    flags = torch.tensor([float(stop), float(due)], device=device)
                    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                    stop, due = bool(flags[0]), bool(flags[1])
                if stop and step < total_steps:
                    status = "preempted"
                    error = (f"stopped by {signals.received} at step {step}/{total_steps}"
                             if signals.received else f"stopped after {steps_this_call} steps "
                             f"(stop_after_steps) at step {step}/{total_steps}")
                    save(prev_elapsed + time.perf_counter() - t_start)
                    break
                if due and step < total_steps:
                    save(prev_elapsed + time.perf_counter() - t_start)
                    last_ckpt_time = time.perf_counter()
            else:
                status = "completed"
        except torch.OutOfMemoryError as e:
            status = "oom"
            error = (f"CUDA out of memory on {device} at step {step} (batch_size "
                     f"{tr.batch_size}, micro_batch_size {micro}, hidden_dim "
                     f"{cfg.model.hidden_dim}); lower train.micro_batch_size: "
                     f"{str(e).splitlines()[0]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a crashed run is recorded, not a crashed sweep
            status = "failed"
            error = f"{type(e).__name__}: {e}"
            log.error("run %s failed:\n%s", run_id, traceback.format_exc())
            if is_main:
                print(traceback.format_exc(), file=sys.stderr)
    bar.close()

    # -- the final evaluation and the record
    elapsed = prev_elapsed + time.perf_counter() - t_start
    checkpoint_bytes = None
    if status == "completed":
        val_loss = last_good["val_loss"]
        if not metrics or metrics[-1]["val_loss"] is None:  # the loop evaluates at the end
            val_loss = evaluate(model, val, eval_bs, tr.seq_len, precision)
            last_good["val_loss"] = val_loss
        checkpoint_bytes = save(elapsed)
    elif status == "preempted" and is_main:
        checkpoint_bytes = ckpt.weights_path(out).stat().st_size
    elif is_main and ckpt.has_checkpoint(out):
        checkpoint_bytes = ckpt.weights_path(out).stat().st_size
    tokens_trained = step * tokens_per_step
    tail_steps = max(0, step - tail_start)
    train_loss = (tail_sum / tail_steps if tail_steps and status == "completed"
                  else last_good["train_loss"])
    val_loss = last_good["val_loss"]
    bytes_per_token = data.val_bytes_per_token
    gpu_count = world if device.type == "cuda" else 0
    tokens_per_s = tokens_trained / elapsed if elapsed > 0 else None
    model_flops_per_s = acc.flops_per_token * tokens_per_s if tokens_per_s else None
    mfu = None
    if peak and model_flops_per_s:
        mfu = model_flops_per_s / (peak * (world if device.type == "cuda" else 1))
    record = RunRecord(
        run_id=run_id, sweep=cfg.name, status=status,
        vocab_size=cfg.vocab_size, embedding_dim=cfg.model.embedding_dim,
        hidden_dim=cfg.model.hidden_dim, num_layers=cfg.model.num_layers,
        dropout=cfg.model.dropout, tie_weights=cfg.model.tie_weights, seq_len=tr.seq_len,
        batch_size=tr.batch_size, lr=tr.lr, seed=tr.seed,
        params_total=acc.params_total, params_embedding=acc.params_embedding,
        params_nonembedding=acc.params_nonembedding, flops_per_token=acc.flops_per_token,
        tokens=tokens_trained, flops=float(acc.flops_per_token) * tokens_trained,
        train_loss=train_loss, val_loss=val_loss,
        val_ppl=math.exp(val_loss) if val_loss is not None and val_loss < 700 else None,
        val_bpb=(val_loss / math.log(2) / bytes_per_token
                 if val_loss is not None and bytes_per_token else None),
        gpu_count=gpu_count,
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else _cpu_name()),
        world_size=world, wall_time_s=elapsed, gpu_hours=gpu_count * elapsed / 3600,
        tokens_per_s=tokens_per_s, mfu=mfu, peak_flops=peak, peak_flops_source=peak_source,
        peak_memory_bytes=_peak_memory(device), checkpoint_bytes=checkpoint_bytes,
        torch_version=torch.__version__, git_commit=git_commit(), config_hash=config_hash(cfg),
        started_at=started_at, finished_at=_now(), data_source=cfg.data.source,
        tokenizer_kind=cfg.tokenizer.kind, val_bytes_per_token=bytes_per_token,
        data_entropy_bpb=data.entropy_bpb, run_dir=str(out.resolve()), error=error)
    if is_main:
        write_json(out / RECORD_FILE, record.to_dict())
    return record


@functools.cache
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return "cpu: " + (platform.processor() or platform.machine())


def train_cli(cfg: RunConfig, out: str | None, device: str) -> int:
    """`llmscale train`: train, print a short summary; 0 if completed, 3 for a run problem."""
    run_dir = Path(out or cfg.output.dir)
    rec = train_run(cfg, run_dir, device, progress=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0 if rec.status == "completed" else 3

    def f(v, spec=".4f"):
        return "n/a" if v is None else format(v, spec)

    print(f"run {rec.run_id}: {rec.status}"
          f"{'' if not rec.error else ' (' + rec.error + ')'}")
    print(f"  train_loss {f(rec.train_loss)}  val_loss {f(rec.val_loss)}  "
          f"val_bpb {f(rec.val_bpb)}  tokens {rec.tokens:,}")
    print(f"  {f(rec.tokens_per_s, ',.0f')} tokens/s  wall {f(rec.wall_time_s, '.1f')} s  "
          f"mfu {f(rec.mfu, '.3f')}  device {rec.device_name} x{rec.world_size}")
    print(f"  record: {run_dir / RECORD_FILE}")
    return 0 if rec.status == "completed" else 3
