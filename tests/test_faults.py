"""Fault injection (issue 24): a run killed at any point of a checkpoint save, or resumed past a
damaged checkpoint, ends bitwise equal to an uninterrupted run; a token cache build killed at
any point is rebuilt or complete, never read half-written.

The kills are real: `llmscale train` (or a loader) in a subprocess, SIGKILLed by the process
itself at a named point of its write (LLMSCALE_TEST_KILL_AT, llmscale.faults). Every wait is on
the process's exit; nothing sleeps.
"""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from legacy_layout import rewrite_in_old_layout  # tests/legacy_layout.py: the old writer
from safetensors.torch import load_file

from llmscale import faults
from llmscale.checkpoint import checkpoint_dir, kept_bytes, weights_path
from llmscale.config import load_config
from llmscale.data import fingerprint, load_tokens
from llmscale.data.cache import read_meta
from llmscale.layout import step_dir
from llmscale.model import build_model
from llmscale.train import train_run

REPO = Path(__file__).resolve().parents[1]

# 50 optimizer steps of 8 x 16 tokens; a checkpoint every 10 steps (10, 20, 30, 40) and the
# final one at 50. With output.keep_checkpoints 2 (the default) a finished run keeps 40 and 50.
RUN = [
    "name=faults", "tokenizer.kind=bytes", "tokenizer.vocab_size=null",
    "data.synthetic_tokens=6000", "data.synthetic_val_tokens=600",
    "model.embedding_dim=16", "model.hidden_dim=16", "model.dropout=0.1",
    "train.batch_size=8", "train.seq_len=16", "train.tokens=6400", "train.lr=1e-2",
    "eval.tokens=600", "output.log_every_steps=5", "output.checkpoint_every_tokens=1280",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread here and in the subprocesses (OMP_NUM_THREADS=1): the same kernels, so the
    same bits, and no OpenMP threads spinning against other jobs on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cfg():
    return load_config(None, RUN)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(faults.ENV, None)
    return {**env, **extra}


def _metrics(run_dir: Path) -> list[list[str]]:
    keys = ("step", "tokens", "train_loss", "val_loss", "lr", "grad_norm")
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [[r[k] for k in keys] for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run that every interrupted one must equal, bit for bit."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("reference")
    rec = train_run(_cfg(), d, "cpu", progress=False)
    torch.set_num_threads(old)
    assert rec.status == "completed", rec.error
    return rec, load_file(str(weights_path(d))), _metrics(d)


def _assert_bitwise(rec, run_dir: Path, reference) -> None:
    want, want_weights, want_metrics = reference
    assert rec.status == "completed", rec.error
    assert (rec.tokens, rec.val_loss, rec.train_loss) == (want.tokens, want.val_loss,
                                                          want.train_loss)
    got = load_file(str(weights_path(run_dir)))
    assert sorted(got) == sorted(want_weights)
    assert all(torch.equal(got[k], want_weights[k]) for k in got)
    assert _metrics(run_dir) == want_metrics


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _train_killed_at(run_dir: Path, point: str) -> None:
    """`llmscale train` of RUN in a subprocess, killed by itself at `point`."""
    args = [sys.executable, "-m", "llmscale", "train", *[a for s in RUN for a in ("--set", s)],
            "--out", str(run_dir), "--device", "cpu"]
    p = subprocess.run(args, cwd=REPO, env=_env(**{faults.ENV: point}), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-3000:])
    assert not (run_dir / "record.json").exists()  # killed: nothing after the point ran


# ------------------------------------------------------------------------------------------
# Checkpoints: a kill at each point of the save sequence

# What each kill leaves of the second save (step 20), beside the whole first one (step 10).
LEFT_BY_KILL = {
    "ckpt-start": {"step-20.tmp": []},
    "ckpt-weights": {"step-20.tmp": ["weights.safetensors"]},
    "ckpt-state": {"step-20.tmp": ["trainer_state.pt", "weights.safetensors"]},
    "ckpt-rename": {"step-20.tmp": ["manifest.json", "trainer_state.pt", "weights.safetensors"]},
    "ckpt-renamed": {"step-20": ["manifest.json", "trainer_state.pt", "weights.safetensors"]},
}


def test_every_checkpoint_point_is_tested():
    assert sorted(LEFT_BY_KILL) == sorted(faults.CHECKPOINT_POINTS)


@pytest.mark.parametrize("point", faults.CHECKPOINT_POINTS)
def test_a_kill_at_each_point_of_a_save_resumes_bitwise(tmp_path, point, reference, capfd):
    run = tmp_path / "run"
    _train_killed_at(run, f"{point}@2")
    ck = checkpoint_dir(run)
    whole = ["manifest.json", "trainer_state.pt", "weights.safetensors"]
    assert {n: _names(ck / n) for n in _names(ck)} == {"step-10": whole, **LEFT_BY_KILL[point]}

    capfd.readouterr()
    rec = train_run(_cfg(), run, "cpu", progress=False)
    _assert_bitwise(rec, run, reference)
    # Nothing was unusable (a .tmp is no checkpoint), so nothing to warn about; the leftover
    # is gone and the newest two are kept.
    assert "warning" not in capfd.readouterr().err
    assert _names(ck) == ["step-40", "step-50"]
    assert rec.checkpoint_bytes == (step_dir(run, 50) / "weights.safetensors").stat().st_size
    assert rec.checkpoint_disk_bytes == kept_bytes(run) == sum(
        f.stat().st_size for s in (40, 50) for f in step_dir(run, s).iterdir())


# ------------------------------------------------------------------------------------------
# Checkpoints: a damaged newest one is skipped for the one before


def _damage(run: Path, how: str) -> str:
    """Damage the newest checkpoint (step-25) as `how` says; returns the reason to expect."""
    new, old = step_dir(run, 25), step_dir(run, 20)
    if how == "truncated weights":
        w = new / "weights.safetensors"
        os.truncate(w, w.stat().st_size - 100)
        return "step-25/weights.safetensors has"
    if how == "corrupted trainer state":
        s = new / "trainer_state.pt"
        data = bytearray(s.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
        s.write_bytes(bytes(data))
        return "step-25/trainer_state.pt does not match its sha256"
    assert how == "torn pair"  # the new weights beside the old trainer state, by hand
    (new / "trainer_state.pt").write_bytes((old / "trainer_state.pt").read_bytes())
    # the older state has fewer metrics rows: its size already differs from the manifest's
    return "step-25/trainer_state.pt has"


@pytest.mark.parametrize("how", ["truncated weights", "corrupted trainer state", "torn pair"])
def test_a_bad_newest_checkpoint_falls_back_and_the_run_ends_bitwise(tmp_path, how, reference,
                                                                      capfd):
    run = tmp_path / "run"
    part = train_run(_cfg(), run, "cpu", progress=False, stop_after_steps=25)
    assert part.status == "preempted"
    assert _names(checkpoint_dir(run)) == ["step-20", "step-25"]
    why = _damage(run, how)

    capfd.readouterr()
    rec = train_run(_cfg(), run, "cpu", progress=False)
    _assert_bitwise(rec, run, reference)  # as if preempted at step 20
    warnings = [line for line in capfd.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("warning: skipped 1 unusable checkpoint(s) in ")
    assert why in warnings[0] and "using step-20 (step 20)" in warnings[0]
    assert "set aside as step-<N>.bad" in warnings[0]
    # the skipped one was set aside, unread, and K = 2 others are kept
    assert _names(checkpoint_dir(run)) == ["step-25.bad", "step-40", "step-50"]


def test_no_usable_checkpoint_stops_with_one_line_naming_the_files(tmp_path):
    run = tmp_path / "run"
    assert train_run(_cfg(), run, "cpu", progress=False,
                     stop_after_steps=25).status == "preempted"
    _damage(run, "truncated weights")
    (step_dir(run, 20) / "trainer_state.pt").write_bytes(b"junk")
    args = [sys.executable, "-m", "llmscale", "train", *[a for s in RUN for a in ("--set", s)],
            "--out", str(run), "--device", "cpu"]
    p = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"llmscale: error: no usable checkpoint in '{checkpoint_dir(run)}': ")
    assert "step-25/weights.safetensors has" in line
    assert "step-20/trainer_state.pt has 4 bytes, its manifest says" in line
    assert _names(checkpoint_dir(run)) == ["step-20", "step-25"]  # nothing touched


def test_eval_reads_the_newest_usable_weights_and_moves_nothing(tmp_path, capfd):
    from llmscale.checkpoint import model_tensors
    from llmscale.evaluate import load_run_model

    run = tmp_path / "run"
    assert train_run(_cfg(), run, "cpu", progress=False,
                     stop_after_steps=25).status == "preempted"
    want = load_file(str(step_dir(run, 20) / "weights.safetensors"))
    _damage(run, "truncated weights")
    capfd.readouterr()
    rm = load_run_model(run)
    got = model_tensors(rm.model)
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in got)
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("warning: skipped 1 unusable checkpoint(s)")
    assert "step-25/weights.safetensors has" in line and line.endswith("using step-20 (step 20)")
    assert _names(checkpoint_dir(run)) == ["step-20", "step-25"]  # eval only reads


def test_a_run_directory_in_the_old_layout_resumes_bitwise(tmp_path, reference, capfd):
    run = tmp_path / "run"
    cfg = _cfg()
    assert train_run(cfg, run, "cpu", progress=False, stop_after_steps=25).status == "preempted"
    assert rewrite_in_old_layout(run, build_model(cfg)) == 25
    assert _names(checkpoint_dir(run)) == ["trainer_state.pt", "weights.safetensors"]

    capfd.readouterr()
    rec = train_run(cfg, run, "cpu", progress=False)
    _assert_bitwise(rec, run, reference)
    assert "warning" not in capfd.readouterr().err
    assert _names(checkpoint_dir(run)) == ["step-40", "step-50"]  # the old pair pruned


# ------------------------------------------------------------------------------------------
# The token cache: a kill at each point of an entry's build

CACHE = ["data.synthetic_tokens=20000", "data.synthetic_val_tokens=3000",
         "data.synthetic_vocab=200", "tokenizer.vocab_size=400"]

# What each kill leaves in <fingerprint>.tmp/ (the entry itself does not exist yet), or None
# when the entry is in place.
BUILT_BY_KILL = {
    "cache-start": [],
    "cache-tokenizer": ["tokenizer.json"],
    "cache-train": ["tokenizer.json", "train.bin"],
    "cache-val": ["tokenizer.json", "train.bin", "val.bin"],
    "cache-rename": ["meta.json", "tokenizer.json", "train.bin", "val.bin"],
    "cache-renamed": None,
}


def test_every_cache_point_is_tested():
    assert sorted(BUILT_BY_KILL) == sorted(faults.CACHE_POINTS)


@pytest.fixture(scope="module")
def clean_cache(tmp_path_factory):
    """An entry built without interruption, to compare the rebuilt ones with."""
    root = tmp_path_factory.mktemp("clean-cache")
    td = load_tokens(load_config(None, [*CACHE, f"data.cache_dir={root}"]), progress=False)
    return np.array(td.train), np.array(td.val), td.tokenizer_path.read_bytes()


@pytest.mark.parametrize("point", faults.CACHE_POINTS)
def test_a_kill_at_each_point_of_a_cache_build_is_rebuilt_or_complete(tmp_path, point,
                                                                      clean_cache, caplog):
    overrides = [*CACHE, f"data.cache_dir={tmp_path}"]
    code = ("from llmscale.config import load_config; from llmscale.data import load_tokens\n"
            f"load_tokens(load_config(None, {overrides!r}), progress=False)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(**{faults.ENV: point}),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-3000:])

    entry = tmp_path / "tokens" / fingerprint(load_config(None, overrides))
    build = entry.with_name(entry.name + ".tmp")
    if BUILT_BY_KILL[point] is None:
        assert read_meta(entry) is not None and not build.exists()
    else:  # no entry a reader could open: only the build directory, as far as it got
        assert not entry.exists() and read_meta(entry) is None
        assert _names(build) == BUILT_BY_KILL[point]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llmscale.data"):
        td = load_tokens(load_config(None, overrides), progress=False)
    log = " ".join(r.message for r in caplog.records)
    if point == "cache-renamed":
        assert "token cache hit" in log and "encoding" not in log
    elif point == "cache-start":
        assert "training bpe" in log and "encoding train" in log
    else:  # the finished tokenizer of the killed build is reused, the rest built again
        assert "tokenizer cache hit" in log and "training bpe" not in log
        assert "encoding train" in log
    train, val, tokenizer = clean_cache
    assert np.array_equal(td.train, train) and np.array_equal(td.val, val)
    assert td.tokenizer_path.read_bytes() == tokenizer
    assert _names(entry) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
    assert not build.exists()


# ------------------------------------------------------------------------------------------
# Disk: what keeping K checkpoints costs, measured, and the dry run's estimate of it


def test_the_record_measures_the_k_checkpoints_kept_and_the_estimate_counts_them(tmp_path):
    from llmscale.accounting import run_accounting
    from llmscale.sweep.estimate import BYTES_PER_PARAM_CHECKPOINT, checkpoint_disk_bytes

    # Wide enough that the parameters, not the RNG states and metrics, fill a checkpoint;
    # 10 steps, a checkpoint every 3 (3, 6, 9) and the final one (10): 3 of 4 kept.
    cfg = load_config(None, [*RUN, "model.hidden_dim=128", "model.embedding_dim=128",
                             "train.tokens=1280", "output.checkpoint_every_tokens=384",
                             "output.keep_checkpoints=3"])
    rec = train_run(cfg, tmp_path, "cpu", progress=False)
    assert rec.status == "completed", rec.error
    assert _names(checkpoint_dir(tmp_path)) == ["step-10", "step-6", "step-9"]
    one = [sum(f.stat().st_size for f in step_dir(tmp_path, s).iterdir()) for s in (6, 9, 10)]
    assert rec.checkpoint_disk_bytes == sum(one) == kept_bytes(tmp_path)
    # T keeps its meaning: one checkpoint's weights file, fp32
    acc = run_accounting(cfg)
    assert rec.checkpoint_bytes == (step_dir(tmp_path, 10) / "weights.safetensors").stat().st_size
    assert rec.checkpoint_bytes == pytest.approx(4 * acc.params_total, rel=0.01)
    # the estimate: K x 12 B/param, within what the RNG states and metrics add
    assert BYTES_PER_PARAM_CHECKPOINT == 12
    assert rec.checkpoint_disk_bytes == pytest.approx(checkpoint_disk_bytes(acc, 3), rel=0.03)
    assert checkpoint_disk_bytes(acc, 1) * 3 == checkpoint_disk_bytes(acc, 3)


def test_the_dry_run_prints_the_disk_for_k_checkpoints(tmp_path, capsys):
    from llmscale.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("sweep: {grid: {model.hidden_dim: [16, 32]}}\n")
    disk = {}
    for k in (1, 3):
        assert main(["sweep", str(cfg), *[a for s in RUN for a in ("--set", s)],
                     "--set", f"output.keep_checkpoints={k}", "--out", str(tmp_path / "s"),
                     "--dry-run"]) == 0
        (line,) = [x for x in capsys.readouterr().out.splitlines()
                   if x.startswith("checkpoints: about")]
        assert f"the last {k} of each run kept, output.keep_checkpoints" in line
        disk[k] = line
    from llmscale.accounting import run_accounting
    from llmscale.sweep.estimate import checkpoint_disk_bytes, fmt_bytes

    accs = [run_accounting(load_config(None, [*RUN, f"model.hidden_dim={h}"])) for h in (16, 32)]
    for k in (1, 3):
        assert fmt_bytes(sum(checkpoint_disk_bytes(a, k) for a in accs)) in disk[k]
