"""Atomic checkpoints: weights in safetensors, trainer state loadable with `weights_only=True`.

Layout under a run directory:

    checkpoint/weights.safetensors   the model's tensors (fp32), by parameter name
    checkpoint/trainer_state.pt      optimizer, schedule position, RNG states, data step,
                                     carried LSTM state, metrics so far (plain types + tensors)

Each file is written through llmscale.atomic (temp name beside it, fsync, rename over the old
one), and trainer_state.pt (which names the run and step) is renamed last. A crash mid-save therefore
leaves either the previous checkpoint or the new one, never a torn mix that claims to be
complete: `has_checkpoint` only trusts a directory whose trainer state exists, and the
trainer state records the step its weights belong to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmscale.atomic import atomic_path
from llmscale.errors import UserError
from llmscale.layout import CHECKPOINT_DIR, STATE_FILE, WEIGHTS_FILE, checkpoint_dir

__all__ = ["CHECKPOINT_DIR", "STATE_FILE", "WEIGHTS_FILE", "checkpoint_dir", "weights_path",
           "has_checkpoint", "model_tensors", "save_checkpoint", "load_trainer_state",
           "load_weights"]


def weights_path(run_dir: str | Path) -> Path:
    return checkpoint_dir(run_dir) / WEIGHTS_FILE


def has_checkpoint(run_dir: str | Path) -> bool:
    """True when `run_dir` holds a complete checkpoint (weights and trainer state)."""
    d = checkpoint_dir(run_dir)
    return (d / STATE_FILE).is_file() and (d / WEIGHTS_FILE).is_file()


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors for safetensors: contiguous CPU copies, shared (tied) ones once.

    safetensors refuses tensors that share storage, and tied weights do; `state_dict(keep_vars)`
    would list the tied matrix under two names, so we keep the first name of each parameter
    (the same dedupe `named_parameters` does) and restore the tie by loading with strict=False.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        out[name] = t.detach().to("cpu", copy=True).contiguous()
    return out


def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, state: dict[str, Any]) -> int:
    """Write weights then trainer state, atomically each. Returns the weights file size, bytes."""
    d = checkpoint_dir(run_dir)
    tensors = model_tensors(model)
    with atomic_path(d / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"run_id": str(state.get("run_id", "")),
                                               "step": str(state.get("step", ""))})
    with atomic_path(d / STATE_FILE) as tmp:
        torch.save(state, tmp)
    return (d / WEIGHTS_FILE).stat().st_size


def load_trainer_state(run_dir: str | Path) -> dict[str, Any]:
    """The trainer state, loaded with `weights_only=True` (no pickled code runs)."""
    p = checkpoint_dir(run_dir) / STATE_FILE
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise UserError(f"checkpoint {str(p)!r} cannot be read ({type(e).__name__}: {e}); "
                        f"delete the checkpoint directory to start the run afresh") from None


def load_weights(run_dir: str | Path, model: torch.nn.Module) -> None:
    """Load the safetensors weights into `model` in place (tied weights stay tied)."""
    p = weights_path(run_dir)
    try:
        tensors = load_file(str(p), device="cpu")
    except Exception as e:  # noqa: BLE001
        raise UserError(f"checkpoint weights {str(p)!r} cannot be read ({type(e).__name__}: "
                        f"{e}); delete the checkpoint directory to start afresh") from None
    expected = model_tensors(model)
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape
                                            for k in expected):
        raise UserError(f"checkpoint weights {str(p)!r} do not match this run's model shape; "
                        f"delete the checkpoint directory to start afresh")
    with torch.no_grad():
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        for name, t in tensors.items():
            params[name].copy_(t)
