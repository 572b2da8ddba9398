"""The checkpoint writer as it was before step directories, for the tests that show old run
directories still resume (tests/test_checkpoint.py, tests/test_faults.py).

`old_save_checkpoint` is llmscale.checkpoint.save_checkpoint at git 5ab8284, verbatim but for
the imports: the weights renamed into place first (llmscale.atomic), then the trainer state,
side by side in checkpoint/. `rewrite_in_old_layout` turns a run directory's newest step
directory into that layout through it: the files hold what the old code would have written at
that step (the weights, their metadata and the trainer state dict are the same in both).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmscale.atomic import atomic_path
from llmscale.checkpoint import model_tensors
from llmscale.layout import STATE_FILE, WEIGHTS_FILE, checkpoint_dir


def old_save_checkpoint(run_dir, model, state) -> int:
    d = checkpoint_dir(run_dir)
    tensors = model_tensors(model)
    with atomic_path(d / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"run_id": str(state.get("run_id", "")),
                                               "step": str(state.get("step", ""))})
    with atomic_path(d / STATE_FILE) as tmp:
        torch.save(state, tmp)
    return (d / WEIGHTS_FILE).stat().st_size


def rewrite_in_old_layout(run_dir: Path, model: torch.nn.Module) -> int:
    """Replace every checkpoint of `run_dir` by its newest, written by the old code. `model`:
    a model of the run's shape (its values are overwritten with the checkpoint's). Returns the
    step."""
    newest = max((p for p in checkpoint_dir(run_dir).iterdir() if p.name.startswith("step-")
                  and p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
    tensors = load_file(str(newest / WEIGHTS_FILE))
    state = torch.load(newest / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(tensors, strict=False)  # strict=False: a tied matrix is stored once
    for p in checkpoint_dir(run_dir).iterdir():
        shutil.rmtree(p)
    old_save_checkpoint(run_dir, model, state)
    return int(state["step"])
