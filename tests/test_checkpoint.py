"""checkpoint: safetensors weights and a weights_only trainer state, saved atomically."""

from __future__ import annotations

import pytest
import torch

from llmscale.checkpoint import (
    checkpoint_dir,
    has_checkpoint,
    load_trainer_state,
    load_weights,
    save_checkpoint,
    weights_path,
)
from llmscale.errors import UserError
from llmscale.model import LargeLanguageModel


def _model(seed: int, tie: bool = False) -> LargeLanguageModel:
    torch.manual_seed(seed)
    return LargeLanguageModel(50, 16, 16, 2, tie_weights=tie)


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_restores_weights_and_state(tmp_path, tie):
    src, dst = _model(0, tie), _model(1, tie)
    opt = torch.optim.AdamW(src.parameters())
    src(torch.randint(0, 50, (2, 5))).sum().backward()
    opt.step()
    state = {"run_id": "abc", "step": 7, "optimizer": opt.state_dict(),
             "rng": torch.get_rng_state(), "metrics": [{"step": 5, "val_loss": None}]}
    assert not has_checkpoint(tmp_path)
    size = save_checkpoint(tmp_path, src, state)
    assert has_checkpoint(tmp_path) and size == weights_path(tmp_path).stat().st_size > 0
    load_weights(tmp_path, dst)
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if tie:  # the tie survives: one tensor, not two copies
        assert dst.output.weight is dst.embedding.weight
    back = load_trainer_state(tmp_path)
    assert back["run_id"] == "abc" and back["step"] == 7 and back["metrics"] == state["metrics"]
    opt2 = torch.optim.AdamW(dst.parameters())
    opt2.load_state_dict(back["optimizer"])
    assert not list(checkpoint_dir(tmp_path).glob("*.tmp"))  # no temp files left behind


def test_half_written_checkpoint_is_not_trusted(tmp_path):
    save_checkpoint(tmp_path, _model(0), {"run_id": "abc", "step": 1})
    (checkpoint_dir(tmp_path) / "trainer_state.pt").unlink()
    assert not has_checkpoint(tmp_path)


def test_corrupt_or_mismatched_checkpoint_is_a_user_error(tmp_path):
    save_checkpoint(tmp_path, _model(0), {"run_id": "abc", "step": 1})
    with pytest.raises(UserError, match="do not match"):
        load_weights(tmp_path, LargeLanguageModel(50, 16, 32, 2))
    (checkpoint_dir(tmp_path) / "trainer_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="trainer_state.pt"):
        load_trainer_state(tmp_path)
    weights_path(tmp_path).write_bytes(b"garbage")
    with pytest.raises(UserError, match="weights.safetensors"):
        load_weights(tmp_path, _model(0))
