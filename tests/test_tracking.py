"""Run tracking: TensorBoard events written by a real run, read back with TensorBoard's reader."""

from __future__ import annotations

import csv

import pytest

from llmscale import layout
from llmscale.config import from_dict
from llmscale.tracking import open_tracker

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = {
    "name": "tracked",
    "data": {"source": "synthetic", "synthetic_tokens": 2000, "synthetic_val_tokens": 200,
             "synthetic_vocab": 64},
    "tokenizer": {"kind": "bytes"},
    "model": {"embedding_dim": 8, "hidden_dim": 8, "num_layers": 1},
    "train": {"tokens": 4096, "batch_size": 4, "seq_len": 16, "lr": 1.0e-2},
    "eval": {"tokens": 128, "every_tokens": 1024},
    "output": {"log_every_steps": 8, "report_to": ["tensorboard"]},
}


def events(run_dir):
    acc = EventAccumulator(str(run_dir / layout.TB_DIR))
    acc.Reload()
    return acc


def metrics_rows(run_dir):
    with open(run_dir / layout.METRICS_FILE, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tensorboard_gets_every_logging_step_and_the_config(tmp_path):
    from llmscale.train import train_run

    cfg = from_dict(TINY)
    rec = train_run(cfg, tmp_path / "run", device="cpu", progress=False)
    assert rec.status == "completed"
    acc = events(tmp_path / "run")
    rows = metrics_rows(tmp_path / "run")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "train/lr", "train/tokens_per_s", "train/grad_norm"} <= tags
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [int(r["step"]) for r in rows]
    assert [e.value for e in loss] == pytest.approx([float(r["train_loss"]) for r in rows],
                                                    rel=1e-6)
    val_steps = [int(r["step"]) for r in rows if r["val_loss"]]
    assert [e.step for e in acc.Scalars("val/loss")] == val_steps
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx(
        [float(r["lr"]) for r in rows], rel=1e-6)
    # the resolved config is attached, with the run and its sweep named
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert cfg.run_id in text and "sweep tracked" in text and "hidden_dim: 8" in text


def test_a_resumed_run_continues_its_curve_without_repeats(tmp_path):
    from llmscale.train import train_run

    cfg = from_dict(TINY)
    run_dir = tmp_path / "run"
    first = train_run(cfg, run_dir, device="cpu", progress=False, stop_after_steps=20)
    assert first.status == "preempted"
    assert train_run(cfg, run_dir, device="cpu", progress=False).status == "completed"
    steps = [e.step for e in events(run_dir).Scalars("train/loss")]
    assert steps == sorted(set(steps)) == [int(r["step"]) for r in metrics_rows(run_dir)]


def test_only_rank_0_reports_and_no_report_to_writes_nothing(tmp_path):
    cfg = from_dict(TINY)
    t = open_tracker(cfg, tmp_path / "r1", "abc", rank=1)
    t.log(1, {"train_loss": 1.0})
    t.close()
    quiet = from_dict({**TINY, "output": {"report_to": []}})
    t = open_tracker(quiet, tmp_path / "r0", "abc", rank=0)
    t.log(1, {"train_loss": 1.0})
    t.close()
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r0").exists()


def test_wandb_logs_offline_without_network_or_credentials(tmp_path, monkeypatch):
    """A real wandb run (the optional extra): no WANDB_MODE, no credentials here, so it logs
    offline into RUN/wandb under the run's id, grouped by the sweep's name."""
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = from_dict({**TINY, "output": {"report_to": ["wandb"]}})
    t = open_tracker(cfg, tmp_path / "run", cfg.run_id)
    assert t.trackers[0].run.group == "tracked" and t.trackers[0].run.id == cfg.run_id
    assert t.trackers[0].run.config["model"]["hidden_dim"] == 8  # the resolved config
    t.log(8, {"train_loss": 2.0, "val_loss": None, "lr": 0.01, "tokens_per_s": 1e4,
              "grad_norm": 0.3})
    t.close()
    runs = list((tmp_path / "run" / layout.WANDB_DIR).glob(f"offline-run-*-{cfg.run_id}"))
    assert len(runs) == 1 and (runs[0] / f"run-{cfg.run_id}.wandb").stat().st_size > 0
