"""One training run: `train_run(cfg, out_dir, device) -> RunRecord`.

`train_run` reads top to bottom: set up (device, DDP, seeds, data, model, optimizer), resume
if a checkpoint is there, then step / log / evaluate / checkpoint until the token budget is
spent (`_loop`), and write the record (`build_record`). Every terminal status (completed,
diverged, oom, preempted, failed) ends with `record.json`; only user mistakes raise
(`UserError`). Everything is local to the call: it can run fifty times in one process.

Truncated BPTT, as the data arrives (TokenStream): each of the B rows of a batch is its own
contiguous stream, and batch `step + 1` continues every row where batch `step` stopped:

    row 0:  [ t0 ... t63 ][ t64 ... t127 ][ ...      one row = one stream, T = seq_len
    row 1:  [ u0 ... u63 ][ u64 ... u127 ][ ...
              step 0         step 1

So the recurrent state at the end of a step is the right initial state for the next one. We
carry it over but *detach* it: gradients stop at the segment boundary (that is what makes the
backprop "truncated") while the memory flows on. When the stream wraps to a new epoch
(`reset`), the state is zeroed. A model without recurrent state (the transformer) carries
None: each window is its own context.

The time split in the record: `setup_s` runs from the call to the first optimizer step (data,
tokenizer, model, resume load), `train_time_s` covers optimizer steps (and the per-step
logging), `eval_time_s` and `checkpoint_time_s` the rest; `tokens_per_s` and `mfu` are measured
over `train_time_s` only. All four, and `wall_time_s`, add up over resumed calls.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmscale import checkpoint as ckpt
from llmscale import hardware as hw
from llmscale import layout
from llmscale.accounting import RunAccounting, run_accounting
from llmscale.atomic import atomic_write_bytes, atomic_write_text
from llmscale.config import RunConfig, config_hash, dump_yaml
from llmscale.errors import UserError
from llmscale.model import build_model
from llmscale.records import RunRecord, read_record_json, write_json
from llmscale.tracking import open_tracker

log = logging.getLogger("llmscale.train")

POSITION_WINDOWS = 64  # windows scored for position_loss.csv: cheap, and enough for a curve
METRICS_COLUMNS = ("run_id", "step", "tokens", "train_loss", "val_loss", "lr", "grad_norm",
                   "tokens_per_s", "elapsed_s")
# Names kept for importers of the pre-layout API; layout.py is their one definition.
RECORD_FILE, CONFIG_FILE, METRICS_FILE = layout.RECORD_FILE, layout.CONFIG_FILE, layout.METRICS_FILE
# Re-exported: bench and scripts import these from here.
cpu_matmul_peak = hw.cpu_peak
peak_flops = hw.peak_flops
resolve_device = hw.resolve_device
resolve_precision = hw.resolve_precision


# ------------------------------------------------------------------------------------------
# Small pure pieces


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to a floor.

    Warmup goes from lr/warmup_steps to lr; the cosine then decays to min_lr_ratio*lr at the
    last step (the floor should be ~= lr/10 per Chinchilla, the default).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    floor = min_lr_ratio * lr
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class StepPlan:
    """The run's schedule in optimizer steps, derived once from the config and the world size."""

    rows: int  # sequences per rank per step
    micro: int  # sequences per forward (gradient accumulation over rows // micro)
    tokens_per_step: int  # all ranks together
    total_steps: int
    warmup_steps: int
    tail_start: int  # record's train_loss = mean over steps [tail_start, total_steps): ~last 5%
    eval_every: int  # steps
    ckpt_every: int | None  # steps, in addition to the wall-clock interval
    log_every: int  # steps


def plan_steps(cfg: RunConfig, world: int, acc: RunAccounting) -> StepPlan:
    """Batch geometry and schedule: global batch = world x rows per rank = world x accum x micro."""
    tr = cfg.train
    if tr.batch_size % world:
        raise UserError(f"train.batch_size: {tr.batch_size} is not divisible by the world size "
                        f"{world}; use a multiple of {world}")
    rows = tr.batch_size // world
    micro = tr.micro_batch_size or rows
    if micro > rows or rows % micro:
        raise UserError(f"train.micro_batch_size: {micro} must divide the rows per rank "
                        f"({tr.batch_size} / {world} ranks = {rows})")
    tokens_per_step = tr.batch_size * tr.seq_len
    total = max(1, acc.tokens // tokens_per_step)  # accounting: the one source of the budget
    eval_every_tokens = cfg.eval.every_tokens or max(tokens_per_step, acc.tokens // 10)
    ckpt_tokens = cfg.output.checkpoint_every_tokens
    return StepPlan(
        rows=rows, micro=micro, tokens_per_step=tokens_per_step, total_steps=total,
        warmup_steps=int(tr.warmup_frac * total),
        tail_start=total - max(1, math.ceil(0.05 * total)),
        eval_every=max(1, eval_every_tokens // tokens_per_step),
        ckpt_every=max(1, ckpt_tokens // tokens_per_step) if ckpt_tokens else None,
        log_every=cfg.output.log_every_steps)


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


def autocast_for(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# The carried recurrent state is a tensor (GRU), a tuple of tensors (LSTM's (h, c)), or None (no
# recurrence). Every tensor in it is (layers, batch, hidden): the batch is dimension 1.

def map_state(fn, state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return tuple(map_state(fn, s) for s in state)


def _state_rows(state, sl: slice):
    return map_state(lambda t: t[:, sl], state)


def _state_cat(parts: list):
    """Concatenate per-micro-batch (or per-rank) states along the batch dimension."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=1)
    return tuple(_state_cat([p[i] for p in parts]) for i in range(len(parts[0])))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, state, *, micro: int, grad_clip: float, precision: str,
               scaler=None, want_norm: bool = False):
    """One optimizer step over this rank's rows `x`, `y` (B, T), accumulating `micro` rows at once.

    `state` is the carried recurrent state (or None), detached; each micro-batch uses its own
    rows of it, so accumulation does not change the maths. Returns (mean loss as a 0-d tensor,
    the gradient norm or None, the new detached state). No host syncs: `.item()` is the
    caller's choice (at logging intervals only).
    """
    n_micro = x.shape[0] // micro
    new_states = []
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float32)
    autocast = autocast_for(precision, x.device)
    for i in range(n_micro):
        sl = slice(i * micro, (i + 1) * micro)
        # DDP all-reduces gradients on the last micro-batch only (no_sync on the others).
        sync = i == n_micro - 1 or not hasattr(model, "no_sync")
        with (contextlib.nullcontext() if sync else model.no_sync()):
            with autocast:
                logits, new = model(x[sl], _state_rows(state, sl))
                # Under autocast cross_entropy runs in fp32 (autocast's fp32 list): no copy needed.
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[sl].reshape(-1))
            scaled = loss / n_micro
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        new_states.append(map_state(torch.Tensor.detach, new))  # truncate BPTT here
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
    return loss_sum / n_micro, norm, _state_cat(new_states)


class _StatefulForward(torch.nn.Module):
    """model(x, state) -> (logits, state): DDP wraps this so its hooks see the real forward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, state):
        return self.model.forward_with_state(x, state)


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: torch.Tensor, batch_size: int, seq_len: int,
             precision: str) -> float:
    """Mean next-token loss (nats/token) over the fixed held-out tokens `val`, state carried.

    `val` is split into `batch_size` contiguous streams read seq_len tokens at a time, the same
    way training reads, so the model is scored with the memory it is trained to use.
    """
    total, count = evaluate_sum(model, val, batch_size, seq_len, precision)
    return total / count


@torch.no_grad()
def evaluate_sum(model: torch.nn.Module, val: torch.Tensor, batch_size: int, seq_len: int,
                 precision: str) -> tuple[float, int]:
    """(summed loss in nats, tokens predicted) over `val`; see `evaluate`."""
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
    return float(total), rows * length


# ------------------------------------------------------------------------------------------
# The loop's state: listed once, saved and restored through these two methods


@dataclass
class LoopState:
    """Everything the loop carries from step to step besides weights and optimizer: exactly
    what a checkpoint saves (with them) and a resume restores, so the resumed run continues
    bitwise where it stopped."""

    step: int = 0  # optimizer steps done
    tail_sum: float = 0.0  # sum of global-batch losses over steps >= tail_start
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv rows so far
    # the logging window in progress (a device tensor: no host sync per step)
    loss_acc: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    steps_in_log: int = 0
    last_good: dict[str, float | None] = field(
        default_factory=lambda: {"train_loss": None, "val_loss": None})
    rng: dict[str, Any] | None = None  # Python/numpy/torch + the run device's CUDA generator
    carried: Any = None  # recurrent state at the end of the last step, all ranks' rows, CPU
    # seconds, summed over resumed calls: wall, setup, train, eval, checkpoint
    times: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("wall", "setup", "train", "eval", "checkpoint"), 0.0))
    started_at: str = ""

    def state_dict(self) -> dict[str, Any]:
        """Plain types and CPU tensors only: loadable with torch.load(weights_only=True)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["loss_acc"] = self.loss_acc.detach().cpu().clone()
        d["carried"] = map_state(lambda t: t.detach().cpu(), self.carried)
        return d

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


# ------------------------------------------------------------------------------------------
# Feeding batches


class BatchFeed:
    """Token batches on the run's device. Each step's (B, T+1) window, a view of the memmap, is
    copied once into a reusable int64 host buffer. On CUDA the buffers are pinned and used in
    turn: a copy from pinned memory with non_blocking=True is truly asynchronous, so it overlaps
    the step before it, and an event keeps a buffer from being refilled while its copy is still
    in flight. On CPU the buffer is the batch (no second copy)."""

    def __init__(self, stream, device: torch.device):
        self.stream, self.device = stream, device
        cuda = device.type == "cuda"
        shape = (stream.batch_size, stream.seq_len + 1)
        self.host = [torch.empty(shape, dtype=torch.int64, pin_memory=cuda)
                     for _ in range(2 if cuda else 1)]
        self.events: list[Any] = [None] * len(self.host)
        self.turn = 0

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        window, reset = self.stream.window(step)
        k = self.turn
        self.turn = (k + 1) % len(self.host)
        if self.events[k] is not None:
            self.events[k].synchronize()  # its previous copy to the GPU has finished
        np.copyto(self.host[k].numpy(), window)  # the one copy (uint16/32 -> int64)
        buf = self.host[k]
        if self.device.type == "cuda":
            buf = buf.to(self.device, non_blocking=True)
            self.events[k] = torch.cuda.Event()
            self.events[k].record()
        return buf[:, :-1], buf[:, 1:], reset


# ------------------------------------------------------------------------------------------
# The run


@dataclass
class _Run:
    """What set-up builds and the loop uses (one per train_run call)."""

    cfg: RunConfig
    out: Path
    device: torch.device
    rank: int
    world: int
    plan: StepPlan
    acc: RunAccounting
    precision: str
    run_id: str
    t0: float  # perf_counter at the call's start
    wall_before: float  # wall seconds of earlier calls (a resumed run)
    model: torch.nn.Module | None = None
    ddp_model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    scaler: Any = None
    feed: BatchFeed | None = None
    val: torch.Tensor | None = None
    eval_bs: int = 0
    data: Any = None  # llmscale.data.TokenData
    tracker: Any = None  # llmscale.tracking: output.report_to's trackers (rank 0; else no-op)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wall(self) -> float:
        """The run's wall seconds so far, over all its calls."""
        return self.wall_before + time.perf_counter() - self.t0


def train_run(cfg: RunConfig, out_dir: str | Path, device: str = "auto", *,
              progress: bool = True, stop_after_steps: int | None = None,
              sweep_point: dict[str, Any] | None = None,
              flops_budget: float | None = None) -> RunRecord:
    """Train the run `cfg` describes in `out_dir` and return its record (also record.json).

    Resumes from `out_dir`'s newest usable checkpoint when it holds one of the same run (one
    `warning:` line for any newer one skipped as unusable); returns the stored record without
    training when the run is already completed there. `stop_after_steps`
    checkpoints and stops (status preempted) after that many optimizer steps of this call:
    the same path a SIGTERM takes, used to test exact resume. `sweep_point` (the swept keys
    and their values) and `flops_budget` (the planned budget) are copied into the record.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    done = _completed_record(out, cfg.run_id)
    if done is not None:
        return done

    dist_info, dev = hw.setup_distributed(device)
    memory = hw.RunMemory(dev).start()  # this run's own peak, from here (resume load included)
    try:
        # The checkpoint is passed, not kept in a name here: _train drops its tensors once
        # they are in the model, rather than holding a second copy of the weights all run.
        return _train(cfg, out, dev, dist_info, _resume_point(cfg, out, dist_info.rank), t0,
                      memory, progress=progress, stop_after_steps=stop_after_steps,
                      sweep_point=sweep_point, flops_budget=flops_budget)
    finally:
        memory.stop()
        if dist_info.made_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _resume_point(cfg: RunConfig, out: Path, rank: int) -> ckpt.Checkpoint | None:
    """The newest usable checkpoint of this run in `out`, or None to start afresh. Every rank
    reads the same files and so picks the same one; rank 0 says, in one line, which newer ones
    it skipped and why, and sets them aside (so pruning never keeps them in place of good
    ones). A UserError when checkpoints exist but none is usable, or they are another run's."""
    found = ckpt.load_checkpoint(out, cfg.run_id)
    if found is not None and found.skipped and rank == 0:
        ckpt.set_aside_skipped(found)
        print(found.warning("the run continues from there as if preempted at that step; the "
                            "skipped ones are set aside as step-<N>.bad"),
              file=sys.stderr, flush=True)
    return found


def _completed_record(out: Path, run_id: str) -> RunRecord | None:
    """The stored record if `out` holds this run completed; refuse a directory of another run."""
    path = out / layout.RECORD_FILE
    if not path.is_file():
        return None
    try:
        old = read_record_json(path)
    except (ValueError, TypeError, OSError):
        return None
    if old.run_id != run_id:
        raise UserError(f"{str(out)!r} holds run {old.run_id}, not {run_id}; "
                        f"use another --out directory (runs are never mixed)")
    return old if old.status == "completed" else None


def _train(cfg: RunConfig, out: Path, device: torch.device, dist_info: hw.Dist,
           resume: ckpt.Checkpoint | None, t0: float, memory: hw.RunMemory, *, progress: bool,
           stop_after_steps: int | None, sweep_point: dict[str, Any] | None,
           flops_budget: float | None) -> RunRecord:
    acc = run_accounting(cfg)
    ls = (_loop_state(resume.state, out, cfg) if resume is not None
          else LoopState(started_at=hw.now_iso()))
    resumed_at = resume.step if resume is not None else None
    run = _Run(cfg=cfg, out=out, device=device, rank=dist_info.rank,
               world=dist_info.world_size, plan=plan_steps(cfg, dist_info.world_size, acc),
               acc=acc, precision=hw.resolve_precision(cfg.train.precision, device),
               run_id=cfg.run_id, t0=t0, wall_before=ls.times["wall"])

    # -- set up, then train; a run that fails is recorded, not raised (user mistakes aside)
    status, error = "failed", None
    run.tracker = open_tracker(cfg, out, run.run_id, rank=run.rank, start_step=ls.step)
    try:
        _setup(run, ls, resume, progress=progress)
        del resume  # its weights are in the model now: free the copy
        ls.times["setup"] += time.perf_counter() - t0
        status, error = _loop(run, ls, progress=progress, stop_after_steps=stop_after_steps)
    except UserError:
        run.tracker.close()
        raise
    except Exception as e:  # noqa: BLE001 - a crashed run is recorded, not a crashed sweep
        if hw.is_out_of_memory(e):
            status, error = "oom", _oom_message(run, ls, e)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            status, error = "failed", f"{type(e).__name__}: {e}"
            log.error("run %s failed:\n%s", run.run_id, traceback.format_exc())
            if run.is_main:
                print(traceback.format_exc(), file=sys.stderr)

    # -- the final evaluations and checkpoint of a completed run
    if status == "completed":
        if not ls.metrics or ls.metrics[-1]["val_loss"] is None:  # the loop evaluates at the end
            ls.last_good["val_loss"] = _timed_eval(run, ls)
        if run.is_main:
            _write_position_loss(run, ls)
        if ls.step != resumed_at:  # resumed at the last step, that checkpoint is this state
            _save(run, ls)
    # measured on disk, after the last save: one checkpoint's weights (T) and all that is kept
    checkpoint_bytes = disk_bytes = None
    weights = ckpt.weights_path(out) if run.is_main else None
    if weights is not None:
        checkpoint_bytes, disk_bytes = weights.stat().st_size, ckpt.kept_bytes(out)
    ls.times["wall"] = run.wall()

    run.tracker.close()
    record = build_record(run, ls, status, error, checkpoint_bytes, memory.stop(),
                          sweep_point=sweep_point, flops_budget=flops_budget,
                          checkpoint_disk_bytes=disk_bytes)
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / layout.RECORD_FILE, record.to_dict())
    return record


def _loop_state(resume: dict[str, Any], out: Path, cfg: RunConfig) -> LoopState:
    """The checkpoint's LoopState. Its times stop where that checkpoint began to be written;
    when the call that wrote it ended right there (preempted: checkpoint, then record.json at
    the same step), the record's times include the checkpoint write and the end of the call,
    and they are taken instead, so nothing that call spent goes unbilled."""
    try:
        ls = LoopState.from_state_dict(resume)
    except KeyError as e:
        raise UserError(f"checkpoint in {str(ckpt.checkpoint_dir(out))!r} lacks {e} (written by "
                        f"an older llmscale); delete that directory to start the run afresh"
                        ) from None
    try:
        old = read_record_json(out / layout.RECORD_FILE)
    except (OSError, ValueError, TypeError):
        return ls
    step_tokens = cfg.train.batch_size * cfg.train.seq_len
    if (old.run_id == cfg.run_id and old.status == "preempted"
            and old.tokens == ls.step * step_tokens and old.wall_time_s is not None
            and old.wall_time_s >= ls.times["wall"]):
        ls.times = {"wall": old.wall_time_s, "setup": old.setup_s or 0.0,
                    "train": old.train_time_s or 0.0, "eval": old.eval_time_s or 0.0,
                    "checkpoint": old.checkpoint_time_s or 0.0}
    return ls


def _oom_message(run: _Run, ls: LoopState, e: BaseException) -> str:
    where = "CUDA" if run.device.type == "cuda" else "CPU"
    tr, m = run.cfg.train, run.cfg.model
    when = f"at step {ls.step}" if run.optimizer is not None else "building the model"
    return (f"{where} out of memory on {run.device} {when} (params_total {run.acc.params_total:,}, "
            f"batch_size {tr.batch_size}, micro_batch_size {run.plan.micro}, hidden_dim "
            f"{m.hidden_dim}); lower train.micro_batch_size or the model size: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")


def _setup(run: _Run, ls: LoopState, resume: ckpt.Checkpoint | None, *, progress: bool
           ) -> None:
    """Data, model, optimizer, the run directory; then the checkpoint's state on top (resume)."""
    from llmscale.data import load_tokens
    from llmscale.data.batches import TokenStream

    cfg, tr, device = run.cfg, run.cfg.train, run.device
    # -- data, model, optimizer (seeded: weights, dropout and data order follow train.seed)
    hw.seed_everything(tr.seed, device)
    data = load_tokens(cfg, progress=progress and run.is_main)
    if data.vocab_size != cfg.vocab_size:
        raise UserError(f"token cache vocab_size {data.vocab_size} != config's {cfg.vocab_size}")
    stream = TokenStream(data.train, run.plan.rows, tr.seq_len, rank=run.rank,
                         world_size=run.world, seed=tr.seed, shuffle_epochs=True)
    n_val = min(cfg.eval.tokens + 1, len(data.val))
    if n_val < 3:
        raise UserError(f"the validation split has {len(data.val)} tokens; need at least 3")
    run.data, run.feed = data, BatchFeed(stream, device)
    run.val = torch.from_numpy(np.asarray(data.val[:n_val], dtype=np.int64)).to(device)
    run.eval_bs = cfg.eval.batch_size or tr.batch_size

    run.model = build_model(cfg).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.enabled = True  # nn.LSTM runs the fused cuDNN kernel
    run.optimizer = make_optimizer(run.model, cfg, device)
    run.scaler = torch.amp.GradScaler("cuda") if run.precision == "fp16" else None

    # -- resume: weights, optimizer, scaler, then the RNG exactly as it was at the checkpoint
    if resume is not None:
        ckpt.apply_weights(run.model, resume)
        run.optimizer.load_state_dict(resume.state["optimizer"])
        if run.scaler is not None and resume.state.get("scaler"):
            run.scaler.load_state_dict(resume.state["scaler"])
        hw.set_rng_state(ls.rng, device)
    ls.loss_acc = ls.loss_acc.to(device)
    # the carried state holds every rank's rows; this rank's are [rank*rows, (rank+1)*rows)
    sl = slice(run.rank * run.plan.rows, (run.rank + 1) * run.plan.rows)
    ls.carried = (map_state(lambda t: t[:, sl].to(device).contiguous(), ls.carried)
                  if resume is not None else run.model.init_state(run.plan.rows, device))

    run.ddp_model = _StatefulForward(run.model)
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run.ddp_model = DDP(run.ddp_model,
                            device_ids=[device.index] if device.type == "cuda" else None)
    if run.is_main:
        # The run directory is a usable model: config, tokenizer, weights (at checkpoints).
        run.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out / layout.CONFIG_FILE,
                          f"# run_id: {run.run_id}\n" + dump_yaml(cfg))
        atomic_write_bytes(run.out / layout.TOKENIZER_FILE, data.tokenizer_path.read_bytes())
        atomic_write_text(run.out / layout.METRICS_FILE, _metrics_text(ls.metrics))


def _loop(run: _Run, ls: LoopState, *, progress: bool, stop_after_steps: int | None
          ) -> tuple[str, str | None]:
    """Step until the budget is spent or something stops the run: (status, error).

    No host sync per step: the step's loss stays on the device (summed into `loss_acc`, and
    over the tail into `tail_acc`), and is read (`float`, a sync) only at log, eval and
    checkpoint boundaries. The one per-step wait left is BatchFeed's, for the host buffer's
    copy of two steps ago (it bounds how far the host runs ahead; a small run, whose device
    idles, never waits there). fp16's GradScaler syncs in `step` (it must know of infs).
    """
    cfg, tr, plan, device = run.cfg, run.cfg.train, run.plan, run.device
    # The tail's loss sum in float64 on the device: the same additions, in the same order, as
    # adding each step's loss to the Python float ls.tail_sum (bitwise the same), without a sync.
    tail_acc = torch.tensor(ls.tail_sum, dtype=torch.float64, device=device)
    bar = _Progress(plan.total_steps * plan.tokens_per_step, ls.step * plan.tokens_per_step,
                    progress and run.is_main, cfg.name)
    tokens_at_log, t_log = ls.step * plan.tokens_per_step, time.perf_counter()
    t_train = time.perf_counter()  # train time = loop time minus evaluations and checkpoints
    eval_before, ckpt_before = ls.times["eval"], ls.times["checkpoint"]
    last_ckpt, steps_this_call = time.perf_counter(), 0
    status, error = "completed", None
    run.model.train()
    try:  # a run that raises still bills the steps it made
        with _Signals() as signals:
            while ls.step < plan.total_steps:
                # -- one optimizer step
                lr = lr_at(ls.step, plan.total_steps, tr.lr, plan.warmup_steps, tr.min_lr_ratio)
                for g in run.optimizer.param_groups:
                    g["lr"] = lr
                x, y, reset = run.feed.get(ls.step)
                if reset:  # a new epoch: the rows start elsewhere, so does the memory
                    ls.carried = run.model.init_state(plan.rows, device)
                is_log = (ls.step + 1) % plan.log_every == 0 or ls.step + 1 == plan.total_steps
                loss, norm, ls.carried = train_step(
                    run.ddp_model, run.optimizer, x, y, ls.carried, micro=plan.micro,
                    grad_clip=tr.grad_clip, precision=run.precision, scaler=run.scaler,
                    want_norm=is_log)
                if ls.step >= plan.tail_start:
                    tail_acc += _global_mean(loss.detach().clone(), run.world)
                ls.loss_acc += loss
                ls.steps_in_log += 1
                ls.step += 1
                steps_this_call += 1

                # -- log (and evaluate) every so often; stop at the first non-finite loss
                is_eval = ls.step % plan.eval_every == 0 or ls.step == plan.total_steps
                if is_log or is_eval:
                    ls.tail_sum = float(tail_acc)
                    train_loss = float(_global_mean(ls.loss_acc / ls.steps_in_log, run.world))
                    if not math.isfinite(train_loss):
                        status = "diverged"
                        error = (f"non-finite training loss ({train_loss}) by step {ls.step}; "
                                 f"lower train.lr (now {tr.lr:g}) or enable train.grad_clip")
                        break
                    now = time.perf_counter()  # before eval: tokens/s is training speed
                    val_loss = _timed_eval(run, ls) if is_eval else None
                    if val_loss is not None and not math.isfinite(val_loss):
                        status, error = "diverged", f"non-finite validation loss at step {ls.step}"
                        break
                    ls.last_good["train_loss"] = train_loss
                    if val_loss is not None:
                        ls.last_good["val_loss"] = val_loss
                    tokens_done = ls.step * plan.tokens_per_step
                    row = {"run_id": run.run_id, "step": ls.step, "tokens": tokens_done,
                           "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                           "grad_norm": float(norm) if norm is not None else None,
                           "tokens_per_s": (tokens_done - tokens_at_log) / max(now - t_log, 1e-9),
                           "elapsed_s": run.wall_before + now - run.t0}
                    _append_metrics(run, ls, row)
                    bar.update(tokens_done, row, plan.total_steps * plan.tokens_per_step)
                    tokens_at_log, t_log = tokens_done, time.perf_counter()
                    ls.loss_acc.zero_()
                    ls.steps_in_log = 0

                # -- stop or checkpoint: every rank decides the same, or collectives would hang.
                # A signal and the wall clock differ between ranks: under DDP they are agreed
                # (a collective, and a sync) at log and eval steps only, so a signal waits at
                # most log_every steps; the step counts below are the same on every rank.
                signalled = signals.received is not None
                clock_due = (time.perf_counter() - last_ckpt) / 60 >= cfg.output.checkpoint_every_minutes
                if run.world == 1 or is_log or is_eval:
                    signalled, clock_due = _agree(run, signalled, clock_due)
                else:
                    signalled = clock_due = False
                stop = signalled or (stop_after_steps is not None
                                     and steps_this_call >= stop_after_steps)
                due = clock_due or (plan.ckpt_every is not None and ls.step % plan.ckpt_every == 0)
                if ls.step < plan.total_steps and (stop or due):
                    if stop:
                        status = "preempted"
                        error = (f"stopped by {signals.received} at step {ls.step}/{plan.total_steps}"
                                 if signals.received else f"stopped after {steps_this_call} steps "
                                 f"(stop_after_steps) at step {ls.step}/{plan.total_steps}")
                    _account_train_time(ls, t_train, eval_before, ckpt_before)
                    t_train, eval_before = time.perf_counter(), ls.times["eval"]
                    ls.tail_sum = float(tail_acc)
                    _save(run, ls)
                    ckpt_before, last_ckpt = ls.times["checkpoint"], time.perf_counter()
                    if stop:
                        break
    finally:
        _account_train_time(ls, t_train, eval_before, ckpt_before)
        bar.close()
    return status, error


def _account_train_time(ls: LoopState, t_train: float, eval_before: float,
                        ckpt_before: float) -> None:
    """Add the loop time since `t_train`, less the evals and checkpoints in it, to train time."""
    spent = time.perf_counter() - t_train
    ls.times["train"] += spent - (ls.times["eval"] - eval_before) - (
        ls.times["checkpoint"] - ckpt_before)


def _global_mean(t: torch.Tensor, world: int) -> torch.Tensor:
    """The mean over ranks (the global batch's value, not this rank's rows)."""
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
        t /= world
    return t


def _agree(run: _Run, stop: bool, due: bool) -> tuple[bool, bool]:
    if run.world == 1:
        return stop, due
    import torch.distributed as dist

    flags = torch.tensor([float(stop), float(due)], device=run.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), bool(flags[1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # so a timer does not bill queued training kernels


def _timed_eval(run: _Run, ls: LoopState) -> float:
    _sync(run.device)
    t = time.perf_counter()
    val = evaluate(run.model, run.val, run.eval_bs, run.cfg.train.seq_len, run.precision)
    ls.times["eval"] += time.perf_counter() - t
    return val


def _write_position_loss(run: _Run, ls: LoopState) -> None:
    """position_loss.csv: the held-out loss by distance from a state reset / context start
    (llmscale.position) over at most 64 fresh windows of the validation split, each at least
    512 tokens and at least the training window. Billed as evaluation."""
    from llmscale.position import MIN_CONTEXT, position_loss, write_position_loss

    context = max(MIN_CONTEXT, run.cfg.train.seq_len)
    n = min(len(run.data.val), POSITION_WINDOWS * (context + 1))
    if n < context + 1:
        log.warning("position loss skipped: the validation split has %d tokens, one window of "
                    "context %d needs %d", len(run.data.val), context, context + 1)
        return
    _sync(run.device)
    t = time.perf_counter()
    val = torch.from_numpy(np.asarray(run.data.val[:n], dtype=np.int64)).to(run.device)
    rows = position_loss(run.model, val, context, batch_size=run.eval_bs,
                         chunk=run.cfg.train.seq_len,
                         autocast=autocast_for(run.precision, run.device))
    write_position_loss(run.out, rows)
    ls.times["eval"] += time.perf_counter() - t


def _gather_carried(run: _Run, carried):
    """The carried state of all ranks' rows, on CPU (rank 0 saves it); a collective."""
    if run.world == 1 or carried is None:
        return map_state(lambda t: t.cpu(), carried)
    import torch.distributed as dist

    def gather(t):
        chunks = [torch.empty_like(t) for _ in range(run.world)]
        dist.all_gather(chunks, t.contiguous())
        return torch.cat(chunks, dim=1).cpu()

    return map_state(gather, carried)


def _save(run: _Run, ls: LoopState) -> None:
    """Checkpoint weights + optimizer + LoopState as one unit (rank 0 writes; llmscale.checkpoint
    keeps the newest output.keep_checkpoints)."""
    _sync(run.device)
    t = time.perf_counter()
    mine = ls.carried
    full = _gather_carried(run, mine)  # every rank calls it
    if run.is_main:
        ls.times["wall"] = run.wall()
        ls.rng = hw.rng_state(run.device)
        ls.carried = full
        state = {"run_id": run.run_id, "total_steps": run.plan.total_steps,
                 "optimizer": run.optimizer.state_dict(),
                 "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                 **ls.state_dict()}
        ls.carried = mine
        ckpt.save_checkpoint(run.out, run.model, state, keep=run.cfg.output.keep_checkpoints)
        # metrics rows past the checkpoint would repeat after a resume: rewrite to match it
        atomic_write_text(run.out / layout.METRICS_FILE, _metrics_text(ls.metrics))
    ls.times["checkpoint"] += time.perf_counter() - t


def _append_metrics(run: _Run, ls: LoopState, row: dict[str, Any]) -> None:
    ls.metrics.append(row)
    if run.is_main:
        with open(run.out / layout.METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(_fmt_row(row))  # one short append; rewritten whole at checkpoints
        run.tracker.log(row["step"], row)


# ------------------------------------------------------------------------------------------
# The record


def build_record(run: _Run, ls: LoopState, status: str, error: str | None,
                 checkpoint_bytes: int | None, memory: hw.MemoryPeak, *,
                 sweep_point: dict[str, Any] | None = None,
                 flops_budget: float | None = None,
                 checkpoint_disk_bytes: int | None = None) -> RunRecord:
    """The run's row of results.csv, from what the run measured (nothing estimated)."""
    import json

    cfg, tr, acc, device = run.cfg, run.cfg.train, run.acc, run.device
    tokens = ls.step * run.plan.tokens_per_step
    tail_steps = max(0, ls.step - run.plan.tail_start)
    train_loss = (ls.tail_sum / tail_steps if tail_steps and status == "completed"
                  else ls.last_good["train_loss"])
    val_loss = ls.last_good["val_loss"]
    bytes_per_token = run.data.val_bytes_per_token if run.data is not None else None
    theory = (run.data.theory if run.data is not None else None) or {}
    gpu_count = run.world if device.type == "cuda" else 0
    wall, train_s = ls.times["wall"], ls.times["train"]
    tokens_per_s = tokens / train_s if train_s > 0 and tokens else None
    peak, peak_source = hw.peak_flops(device, run.precision)
    mfu = None
    if peak and tokens_per_s:  # a peak is per device; DDP on CPU shares one machine's cores
        mfu = acc.flops_per_token * tokens_per_s / (peak * (gpu_count or 1))
    return RunRecord(
        run_id=run.run_id, sweep=cfg.name, status=status,
        vocab_size=cfg.vocab_size, embedding_dim=cfg.model.embedding_dim,
        hidden_dim=cfg.model.hidden_dim, num_layers=cfg.model.num_layers,
        dropout=cfg.model.dropout, tie_weights=cfg.model.tie_weights, seq_len=tr.seq_len,
        batch_size=tr.batch_size, lr=tr.lr, seed=tr.seed,
        params_total=acc.params_total, params_embedding=acc.params_embedding,
        params_nonembedding=acc.params_nonembedding, flops_per_token=acc.flops_per_token,
        tokens=tokens, flops=float(acc.flops_per_token) * tokens,
        train_loss=train_loss, val_loss=val_loss,
        val_ppl=math.exp(val_loss) if val_loss is not None and val_loss < 700 else None,
        val_bpb=(val_loss / math.log(2) / bytes_per_token
                 if val_loss is not None and bytes_per_token else None),
        gpu_count=gpu_count, device_name=hw.device_name(device), world_size=run.world,
        wall_time_s=wall, gpu_hours=gpu_count * wall / 3600,
        tokens_per_s=tokens_per_s, mfu=mfu,
        peak_memory_bytes=memory.allocated, checkpoint_bytes=checkpoint_bytes,
        torch_version=torch.__version__, git_commit=hw.git_commit(),
        config_hash=config_hash(cfg), started_at=ls.started_at, finished_at=hw.now_iso(),
        setup_s=ls.times["setup"], train_time_s=train_s, eval_time_s=ls.times["eval"],
        checkpoint_time_s=ls.times["checkpoint"],
        model_kind=cfg.model.kind, flops_budget=flops_budget,
        sweep_point=json.dumps(sweep_point, sort_keys=True) if sweep_point else None,
        run_dir=str(run.out.resolve()),
        data_source=cfg.data.source, tokenizer_kind=cfg.tokenizer.kind,
        val_bytes_per_token=bytes_per_token,
        data_entropy_bpb=run.data.entropy_bpb if run.data is not None else None,
        peak_flops=peak, peak_flops_source=peak_source,
        peak_memory_reserved_bytes=memory.reserved, error=error,
        checkpoint_disk_bytes=checkpoint_disk_bytes,
        data_theory_alpha=theory.get("alpha"), data_theory_beta=theory.get("beta"))


# ------------------------------------------------------------------------------------------
# Signals, metrics file, progress


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
