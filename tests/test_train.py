"""train_run end to end on CPU with tiny models: loss goes down, the record is complete and
plausible, resume is bitwise exact, faults (NaN, SIGTERM, a foreign checkpoint) end as records."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmscale.accounting import run_accounting
from llmscale.checkpoint import has_checkpoint, state_path, weights_path
from llmscale.config import load_config
from llmscale.errors import UserError
from llmscale.records import COLUMNS, read_record_json
from llmscale.train import lr_at, param_groups, train_run

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "name=tiny", "tokenizer.kind=bytes", "tokenizer.vocab_size=null",
    "data.synthetic_tokens=6000", "data.synthetic_val_tokens=600",
    "model.embedding_dim=16", "model.hidden_dim=32", "train.batch_size=8",
    "train.seq_len=16", "train.tokens=24000", "train.lr=1e-2", "eval.tokens=1500",
    "output.log_every_steps=5",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads
    spin against other jobs: one thread keeps these tests fast and steady."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")


def tiny(*overrides: str):
    return load_config(None, TINY + list(overrides))


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    assert lrs[-1] == pytest.approx(0.1)
    assert lr_at(0, 1, 3e-3, 0, 0.1) == pytest.approx(3e-3)  # a one-step run trains at peak


def test_no_weight_decay_on_biases_and_embeddings():
    from llmscale.model import build_model

    model = build_model(tiny())
    decay, no_decay = param_groups(model, 0.1, decay_all=False)
    assert {id(p) for p in decay["params"]} == {id(model.lstm.weight_ih_l0),
                                              id(model.lstm.weight_hh_l0),
                                              id(model.output.weight)}
    assert id(model.embedding.weight) in {id(p) for p in no_decay["params"]}
    decay, no_decay = param_groups(model, 0.1, decay_all=True)
    assert not no_decay["params"]


def test_loss_decreases_and_every_record_field_is_plausible(tmp_path):
    cfg = tiny()
    rec = train_run(cfg, tmp_path, "cpu", progress=False)
    acc = run_accounting(cfg)
    assert rec.status == "completed", rec.error
    rows = _metrics(tmp_path)
    assert list(rows[0]) == ["run_id", "step", "tokens", "train_loss", "val_loss", "lr",
                             "grad_norm", "tokens_per_s", "elapsed_s"]
    assert {r["run_id"] for r in rows} == {cfg.run_id}
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert first > last + 0.5, (first, last)  # bytes start at ln(257) = 5.55 nats
    vals = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(vals) >= 5 and vals[-1] < vals[0]
    assert rec.val_loss == pytest.approx(vals[-1])
    assert rec.val_loss < math.log(257) - 1.0
    # record: every field is filled but what depends on the source (the synthetic entropy, the
    # facts language's theory exponents), the error, what only sweeps set (budget, point) and
    # what only CUDA measures (reserved memory)
    for name in COLUMNS:
        if name not in ("error", "data_entropy_bpb", "data_theory_alpha", "data_theory_beta",
                        "git_commit", "flops_budget", "sweep_point", "peak_memory_reserved_bytes"):
            assert getattr(rec, name) is not None, name
    assert rec.error is None
    steps = acc.tokens // (8 * 16)
    assert rec.tokens == steps * 8 * 16 and rec.tokens <= acc.tokens
    assert rec.flops == acc.flops_per_token * rec.tokens
    assert (rec.params_total, rec.params_nonembedding, rec.flops_per_token) == (
        acc.params_total, acc.params_nonembedding, acc.flops_per_token)
    assert rec.vocab_size == 257 and rec.hidden_dim == 32 and rec.batch_size == 8
    assert rec.val_ppl == pytest.approx(math.exp(rec.val_loss))
    assert rec.val_bpb == pytest.approx(rec.val_loss / math.log(2) / rec.val_bytes_per_token)
    assert 0 < rec.train_loss < first
    assert rec.gpu_count == 0 and rec.world_size == 1 and rec.gpu_hours == 0
    assert rec.device_name.startswith("cpu")
    assert rec.wall_time_s > 0
    # the time split: parts of the wall time, none of them empty; throughput from steps only
    parts = (rec.setup_s, rec.train_time_s, rec.eval_time_s, rec.checkpoint_time_s)
    assert all(p > 0 for p in parts), parts
    assert sum(parts) <= rec.wall_time_s + 1e-6
    assert sum(parts) == pytest.approx(rec.wall_time_s, rel=0.1, abs=0.05)
    assert rec.tokens_per_s == pytest.approx(rec.tokens / rec.train_time_s)
    assert rec.mfu == pytest.approx(rec.flops_per_token * rec.tokens_per_s / rec.peak_flops)
    # MFU is a fraction of a measured ceiling: it cannot reach 1 (a tiny LSTM on one thread is
    # far below it), and a peak measured too low would show here as an MFU above 1.
    assert 0 < rec.mfu <= 1.0 and rec.peak_flops > 1e9 and rec.peak_flops_source
    assert rec.model_kind == "lstm" and rec.peak_memory_reserved_bytes is None
    # the run directory is a usable model: the tokenizer beside the weights
    assert (tmp_path / "tokenizer.json").is_file()
    assert rec.peak_memory_bytes > 10 * 2**20
    assert rec.checkpoint_bytes == weights_path(tmp_path).stat().st_size
    assert rec.torch_version == torch.__version__
    assert rec.started_at <= rec.finished_at
    assert rec.run_id == cfg.run_id and rec.sweep == "tiny"
    # on disk: record.json equals the returned record, the config, a loadable checkpoint
    assert read_record_json(tmp_path / "record.json") == rec
    assert f"run_id: {cfg.run_id}" in (tmp_path / "config.yaml").read_text()
    state = torch.load(state_path(tmp_path), weights_only=True)
    assert state["run_id"] == cfg.run_id and state["step"] == steps
    weights = load_file(str(weights_path(tmp_path)))
    assert weights["output.weight"].shape == (257, 32)
    # a completed run is returned as it is, without training again
    again = train_run(cfg, tmp_path, "cpu", progress=False)
    assert again == rec


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(weights_path(run_dir)))


def test_exact_resume_after_interruption_at_a_random_step(tmp_path):
    # Two layers with dropout (RNG state matters) and gradient accumulation (per-micro-batch
    # state): an interrupted run must end bitwise where the uninterrupted one does.
    cfg = tiny("model.num_layers=2", "model.dropout=0.1", "train.micro_batch_size=4",
               "train.tokens=12000")
    total = 12000 // 128
    stop = random.Random().randint(1, total - 2)
    full = train_run(cfg, tmp_path / "full", "cpu", progress=False)
    part = train_run(cfg, tmp_path / "part", "cpu", progress=False, stop_after_steps=stop)
    assert part.status == "preempted", part.error
    assert has_checkpoint(tmp_path / "part")
    assert json.loads((tmp_path / "part" / "record.json").read_text())["status"] == "preempted"
    resumed = train_run(cfg, tmp_path / "part", "cpu", progress=False)
    assert resumed.status == "completed"
    assert resumed.tokens == full.tokens
    # times add up over the two calls: the resumed record bills the interrupted call's too
    for name in ("wall_time_s", "setup_s", "train_time_s", "checkpoint_time_s"):
        assert getattr(resumed, name) > getattr(part, name) > 0, name
    assert resumed.started_at == part.started_at
    assert resumed.val_loss == full.val_loss, f"stopped at step {stop}"
    assert resumed.train_loss == full.train_loss
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = _metrics(tmp_path / "full"), _metrics(tmp_path / "part")
    keys = ("step", "tokens", "train_loss", "val_loss", "lr", "grad_norm")
    assert [[r[k] for k in keys] for r in ma] == [[r[k] for k in keys] for r in mb]


def test_checkpoint_of_another_run_is_refused(tmp_path):
    cfg = tiny("train.tokens=4000")
    assert train_run(cfg, tmp_path, "cpu", progress=False, stop_after_steps=2).status == "preempted"
    with pytest.raises(UserError, match="not"):
        train_run(tiny("train.tokens=4000", "train.lr=1e-3"), tmp_path, "cpu", progress=False)


def test_absurd_lr_diverges_without_raising(tmp_path):
    rec = train_run(tiny("train.lr=1e6", "train.grad_clip=0", "train.tokens=8000"), tmp_path,
                    "cpu", progress=False)
    assert rec.status == "diverged"
    assert "non-finite" in rec.error
    assert read_record_json(tmp_path / "record.json").status == "diverged"
    assert rec.train_loss is None or math.isfinite(rec.train_loss)


def test_bad_device_and_batch_geometry_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--device"):
        train_run(tiny(), tmp_path, "tpu", progress=False)
    with pytest.raises(UserError, match="micro_batch_size"):
        train_run(tiny("train.batch_size=8", "train.micro_batch_size=3"), tmp_path, "cpu",
                  progress=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmscale", "train", *[a for s in TINY for a in ("--set", s)],
            *args]


def test_sigterm_checkpoints_and_resumes_in_a_subprocess(tmp_path):
    run = tmp_path / "run"
    # A budget that takes a while (tens of seconds), and minute-long checkpoints, so only the
    # signal can cause the checkpoint we find.
    args = _cli("--set", "train.tokens=3000000", "--set", "eval.every_tokens=1000000",
                "--out", str(run), "--device", "cpu")
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "metrics.csv").is_file() and len(_metrics(run)) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    rec = json.loads((run / "record.json").read_text())
    assert rec["status"] == "preempted" and "SIGTERM" in rec["error"]
    assert has_checkpoint(run)
    state = torch.load(state_path(run), weights_only=True)
    assert 0 < state["step"] < 3000000 // 128
    # Resuming continues from that step: the metrics keep their rows up to the checkpoint.
    cfg = tiny("train.tokens=3000000", "eval.every_tokens=1000000")
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    resumed = train_run(cfg, run, "cpu", progress=False, stop_after_steps=5)
    state2 = torch.load(state_path(run), weights_only=True)
    assert resumed.status == "preempted" and state2["step"] == state["step"] + 5
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    sets = ["--set", "train.tokens=8000", "--set", "train.micro_batch_size=2"]
    env = _env()
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", *_cli(*sets, "--out", str(tmp_path / "ddp"),
                                                         "--device", "cpu")[1:]],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(_cli(*sets, "--out", str(tmp_path / "one"), "--device", "cpu"),
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    a = read_record_json(tmp_path / "ddp" / "record.json")
    b = read_record_json(tmp_path / "one" / "record.json")
    assert a.world_size == 2 and b.world_size == 1 and a.gpu_count == 0
    assert a.tokens == b.tokens
    assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4)
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    la = [float(r["train_loss"]) for r in _metrics(tmp_path / "ddp")]
    lb = [float(r["train_loss"]) for r in _metrics(tmp_path / "one")]
    assert la == pytest.approx(lb, rel=1e-4)
    # only rank 0 wrote: one metrics row per log step, not two
    assert len(la) == len(lb)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_every_model_kind_trains_resumes_exactly_and_writes_its_position_loss(tmp_path, kind):
    extra = ["model.kind=" + kind, "train.tokens=6000"]
    if kind == "transformer":
        extra += ["model.num_heads=2"]
    cfg = tiny(*extra)
    full = train_run(cfg, tmp_path / "full", "cpu", progress=False)
    assert full.status == "completed", full.error
    assert full.model_kind == kind
    part = train_run(cfg, tmp_path / "part", "cpu", progress=False, stop_after_steps=20)
    assert part.status == "preempted"
    resumed = train_run(cfg, tmp_path / "part", "cpu", progress=False)
    assert resumed.val_loss == full.val_loss and resumed.train_loss == full.train_loss
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    from llmscale.position import read_position_loss

    rows = read_position_loss(tmp_path / "full")
    assert [p for p, _ in rows] == list(range(1, 513))
    assert all(math.isfinite(v) for _, v in rows)


def test_two_runs_in_one_process_record_their_own_peak_memory(tmp_path):
    # A run with ~80 MB of weights, gradients and AdamW state, then a tiny one, in this
    # process: the tiny one's peak is its own, not the process's high-water mark.
    big = train_run(tiny("model.embedding_dim=768", "model.hidden_dim=768", "train.tokens=256",
                         "eval.tokens=200"), tmp_path / "big", "cpu", progress=False)
    small = train_run(tiny("train.tokens=256", "eval.tokens=200"), tmp_path / "small", "cpu",
                      progress=False)
    assert big.status == small.status == "completed"
    assert big.peak_memory_bytes - small.peak_memory_bytes > 40 * 2**20, (
        big.peak_memory_bytes, small.peak_memory_bytes)


def test_cpu_allocation_failure_is_recorded_as_oom(tmp_path):
    # 4 x 200000 x 200064 LSTM weights = 640 GB: the CPU allocator refuses at model build.
    rec = train_run(tiny("model.hidden_dim=200000", "train.tokens=256"), tmp_path, "cpu",
                    progress=False)
    assert rec.status == "oom", rec.error
    assert rec.error.startswith("CPU out of memory on cpu building the model")
    assert "hidden_dim 200000" in rec.error and "can't allocate memory" in rec.error
    assert read_record_json(tmp_path / "record.json").status == "oom"


def test_no_host_sync_per_step(tmp_path, monkeypatch):
    """The loop reads the device (`.item()`, `float(t)`, `bool(t)`, ...) at log, eval and
    checkpoint boundaries only: a run twice as long, with the same boundaries, reads it exactly
    as often. (On a GPU each read waits for every queued kernel.)"""
    reads: list[str] = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **k):
            reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for steps in (60, 120):  # 8 x 16 tokens a step; the tail (last 5%) has 3 and 6 steps
        reads.clear()
        rec = train_run(tiny(f"train.tokens={steps * 128}", "output.log_every_steps=1000",
                             "eval.every_tokens=1000000", "output.checkpoint_every_minutes=60"),
                        tmp_path / str(steps), "cpu", progress=False)
        assert rec.status == "completed" and rec.tokens == steps * 128
        counts.append(len(reads))
    assert counts[0] == counts[1], counts
