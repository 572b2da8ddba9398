"""checkpoint: one directory per checkpoint (weights, trainer state, manifest) written as a unit,
the newest K kept, each checked whole and as a pair on load, an unusable one skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from legacy_layout import old_save_checkpoint  # tests/legacy_layout.py: the old writer
from safetensors.torch import save_file

from llmscale.checkpoint import (
    apply_weights,
    checkpoint_dir,
    has_checkpoint,
    kept_bytes,
    load_checkpoint,
    load_weights,
    model_tensors,
    save_checkpoint,
    set_aside_skipped,
    weights_path,
)
from llmscale.errors import UserError
from llmscale.layout import parse_step, step_dir
from llmscale.model import LargeLanguageModel


def _model(seed: int, tie: bool = False) -> LargeLanguageModel:
    torch.manual_seed(seed)
    return LargeLanguageModel(50, 16, 16, 2, tie_weights=tie)


def _state(step: int, run_id: str = "abc", **extra) -> dict:
    return {"run_id": run_id, "step": step, "rng": torch.get_rng_state(), **extra}


def _names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in checkpoint_dir(run_dir).iterdir())


def _save_steps(run_dir: Path, steps, keep: int = 2) -> dict[int, LargeLanguageModel]:
    """One checkpoint per step, each of a different model (so the weights tell them apart)."""
    models = {}
    for s in steps:
        models[s] = _model(s)
        save_checkpoint(run_dir, models[s], _state(s), keep=keep)
    return models


def _same_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
    mine = model_tensors(model)
    return set(mine) == set(tensors) and all(torch.equal(mine[k], tensors[k]) for k in mine)


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_restores_weights_and_state(tmp_path, tie):
    src, dst = _model(0, tie), _model(1, tie)
    opt = torch.optim.AdamW(src.parameters())
    src(torch.randint(0, 50, (2, 5))).sum().backward()
    opt.step()
    state = _state(7, optimizer=opt.state_dict(), metrics=[{"step": 5, "val_loss": None}])
    assert not has_checkpoint(tmp_path) and load_checkpoint(tmp_path, "abc") is None
    final = save_checkpoint(tmp_path, src, state)
    assert final == step_dir(tmp_path, 7) and _names(tmp_path) == ["step-7"]
    assert sorted(p.name for p in final.iterdir()) == [
        "manifest.json", "trainer_state.pt", "weights.safetensors"]
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["run_id"] == "abc" and manifest["step"] == 7
    assert manifest["files"]["weights.safetensors"]["bytes"] == weights_path(tmp_path).stat().st_size
    ck = load_checkpoint(tmp_path, "abc")
    assert ck.step == 7 and ck.path == final and ck.skipped == () and ck.warning() is None
    apply_weights(dst, ck)
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if tie:  # the tie survives: one tensor, not two copies
        assert dst.output.weight is dst.embedding.weight
    assert ck.state["metrics"] == state["metrics"] and torch.equal(ck.state["rng"], state["rng"])
    torch.optim.AdamW(dst.parameters()).load_state_dict(ck.state["optimizer"])
    assert kept_bytes(tmp_path) == sum(f.stat().st_size for f in final.iterdir())


def test_the_newest_k_are_kept(tmp_path):
    _save_steps(tmp_path / "k2", [3, 6, 9, 12])
    assert _names(tmp_path / "k2") == ["step-12", "step-9"]
    _save_steps(tmp_path / "k1", [3, 6, 9], keep=1)
    assert _names(tmp_path / "k1") == ["step-9"]
    _save_steps(tmp_path / "k5", [3, 6, 9], keep=5)
    assert _names(tmp_path / "k5") == ["step-3", "step-6", "step-9"]
    # kept_bytes: every file of every kept checkpoint, about K times one
    one = sum(f.stat().st_size for f in step_dir(tmp_path / "k2", 12).iterdir())
    assert kept_bytes(tmp_path / "k2") == pytest.approx(2 * one, rel=0.01)
    assert kept_bytes(tmp_path / "k1") == pytest.approx(one, rel=0.01)


def test_leftovers_of_a_killed_save_or_prune_are_ignored_then_removed(tmp_path):
    models = _save_steps(tmp_path, [4])
    ck = checkpoint_dir(tmp_path)
    (ck / "step-8.tmp").mkdir()  # a save killed before its rename
    save_file(model_tensors(_model(8)), str(ck / "step-8.tmp" / "weights.safetensors"))
    shutil.copytree(ck / "step-4", ck / "step-2.del")  # a prune killed mid-delete
    got = load_checkpoint(tmp_path, "abc")
    assert got.step == 4 and got.skipped == () and _same_weights(models[4], got.tensors)
    save_checkpoint(tmp_path, _model(6), _state(6))
    assert _names(tmp_path) == ["step-4", "step-6"]


@pytest.mark.parametrize("damage", ["truncated weights", "corrupted state", "flipped weights byte",
                                    "no manifest", "torn pair", "torn pair, manifest redone"])
def test_an_unusable_newest_checkpoint_is_skipped_for_the_one_before(tmp_path, damage):
    models = _save_steps(tmp_path, [4, 8])
    new, old = step_dir(tmp_path, 8), step_dir(tmp_path, 4)
    w, s = new / "weights.safetensors", new / "trainer_state.pt"
    if damage == "truncated weights":
        os.truncate(w, w.stat().st_size // 2)
        why = r"step-8/weights.safetensors has \d+ bytes, its manifest says \d+"
    elif damage == "corrupted state":
        s.write_bytes(b"\0" * 64 + s.read_bytes()[64:])  # same size, broken zip header
        why = r"step-8/trainer_state.pt does not match its sha256"
    elif damage == "flipped weights byte":
        # In the tensor payload: safetensors itself would load this without a word.
        data = bytearray(w.read_bytes())
        data[-5] ^= 0xFF
        w.write_bytes(bytes(data))
        why = r"step-8/weights.safetensors does not match its sha256"
    elif damage == "no manifest":
        (new / "manifest.json").unlink()
        why = r"step-8/manifest.json is missing"
    elif damage == "torn pair":  # new weights beside the old trainer state, by hand
        shutil.copyfile(old / "trainer_state.pt", s)
        why = r"step-8/trainer_state.pt does not match its sha256"
    else:  # the same, and the manifest rewritten to match: the pair check alone refuses it
        shutil.copyfile(old / "trainer_state.pt", s)
        m = json.loads((new / "manifest.json").read_text())
        m["files"]["trainer_state.pt"] = json.loads(
            (old / "manifest.json").read_text())["files"]["trainer_state.pt"]
        (new / "manifest.json").write_text(json.dumps(m))
        why = (r"step-8/weights.safetensors \(run abc, step 8\) and step-8/trainer_state.pt "
               r"\(run abc, step 4\) are not one checkpoint \(a torn pair\)")
    got = load_checkpoint(tmp_path, "abc")
    assert got.step == 4 and got.path == old and _same_weights(models[4], got.tensors)
    assert got.state["step"] == 4
    (reason,) = got.skipped
    assert re.search(why, reason), reason
    line = got.warning()
    assert line.startswith("warning: ") and "\n" not in line and "step-8" in line
    assert line.endswith("using step-4 (step 4)") and got.skipped_dirs == (new,)
    # Set aside (as a resuming run does), it is out of the K kept and never read again.
    set_aside_skipped(got)
    assert _names(tmp_path) == ["step-4", "step-8.bad"]
    save_checkpoint(tmp_path, _model(6), _state(6))
    save_checkpoint(tmp_path, _model(7), _state(7))
    assert _names(tmp_path) == ["step-6", "step-7", "step-8.bad"]
    assert load_checkpoint(tmp_path, "abc").step == 7


def test_no_usable_checkpoint_is_one_line_naming_each_file(tmp_path):
    _save_steps(tmp_path, [4, 8])
    os.truncate(step_dir(tmp_path, 8) / "weights.safetensors", 10)
    (step_dir(tmp_path, 4) / "trainer_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as info:
        load_checkpoint(tmp_path, "abc")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("no usable checkpoint in")
    assert "step-8/weights.safetensors has 10 bytes" in msg
    assert "step-4/trainer_state.pt has 16 bytes" in msg


def test_a_checkpoint_of_another_run_is_refused_not_skipped(tmp_path):
    _save_steps(tmp_path, [4])
    with pytest.raises(UserError, match="is a checkpoint of run abc, not xyz"):
        load_checkpoint(tmp_path, "xyz")


def test_weights_only_loading_does_not_need_the_trainer_state(tmp_path):
    """`eval` and `sample` read the weights alone (checked by the manifest and the step)."""
    models = _save_steps(tmp_path, [4, 8])
    (step_dir(tmp_path, 8) / "trainer_state.pt").write_bytes(b"junk")
    dst = _model(99)
    got = load_weights(tmp_path, dst)
    assert got.step == 8 and got.state is None and _same_weights(models[8], model_tensors(dst))
    with pytest.raises(UserError, match="do not match this run's model shape"):
        load_weights(tmp_path, LargeLanguageModel(50, 16, 32, 2))
    with pytest.raises(UserError, match="has no checkpoint"):
        load_weights(tmp_path / "empty", dst)


# --- the layout before step directories --------------------------------------------------


def test_the_old_layout_is_read_checked_and_pruned(tmp_path):
    old_model = _model(3)
    old_save_checkpoint(tmp_path, old_model, _state(3))
    assert has_checkpoint(tmp_path) and weights_path(tmp_path).parent == checkpoint_dir(tmp_path)
    got = load_checkpoint(tmp_path, "abc")
    assert got.step == 3 and got.skipped == () and _same_weights(old_model, got.tensors)
    # Step directories are newer than it; it is kept until K of them exist.
    save_checkpoint(tmp_path, _model(5), _state(5))
    assert _names(tmp_path) == ["step-5", "trainer_state.pt", "weights.safetensors"]
    assert load_checkpoint(tmp_path, "abc").step == 5
    save_checkpoint(tmp_path, _model(7), _state(7))
    assert _names(tmp_path) == ["step-5", "step-7"]


def test_the_old_layout_torn_pair_of_the_issue_is_refused(tmp_path):
    """Issue 24's case: new weights beside the trainer state kept from an earlier save."""
    old_save_checkpoint(tmp_path, _model(1), _state(99))
    kept = (checkpoint_dir(tmp_path) / "trainer_state.pt").read_bytes()
    old_save_checkpoint(tmp_path, _model(2), _state(135))
    (checkpoint_dir(tmp_path) / "trainer_state.pt").write_bytes(kept)
    with pytest.raises(UserError) as info:
        load_checkpoint(tmp_path, "abc")
    assert str(info.value).startswith(f"no usable checkpoint in '{checkpoint_dir(tmp_path)}': "
                                      "weights.safetensors (run abc, step 135) and "
                                      "trainer_state.pt (run abc, step 99) are not one checkpoint")


def test_step_names():
    assert parse_step("step-12") == 12 and parse_step("step-0") == 0
    for name in ("step-12.tmp", "step-12.bad", "step-12.del", "step-", "step-1a", "steps-1",
                 "weights.safetensors", "step-١٢"):
        assert parse_step(name) is None, name


def test_a_directory_at_or_past_the_step_being_saved_is_set_aside(tmp_path):
    """Not from this run's own resume (which sets aside what it skips): one copied in by hand.
    It must neither block the save's rename nor outrank the checkpoint being written."""
    _save_steps(tmp_path, [4, 8])
    save_checkpoint(tmp_path, _model(6), _state(6))
    assert _names(tmp_path) == ["step-4", "step-6", "step-8.bad"]
    eight = _model(88)
    save_checkpoint(tmp_path, eight, _state(8))  # step 8 again: a new one beside the .bad
    assert _names(tmp_path) == ["step-6", "step-8", "step-8.bad"]
    got = load_checkpoint(tmp_path, "abc")
    assert got.step == 8 and _same_weights(eight, got.tensors)
    save_checkpoint(tmp_path, _model(5), _state(5))  # and a .bad of the same name is replaced
    assert _names(tmp_path) == ["step-5", "step-6.bad", "step-8.bad"]
