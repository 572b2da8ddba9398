"""The shell scripts take paths relative to the caller's directory (they do not cd)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "name": "scripted",
    "data": {"source": "synthetic", "synthetic_tokens": 2000, "synthetic_val_tokens": 200,
             "synthetic_vocab": 64},
    "tokenizer": {"kind": "bytes"},
    "model": {"embedding_dim": 8, "hidden_dim": 8, "num_layers": 1},
    "train": {"tokens": 1024, "batch_size": 4, "seq_len": 16},
    "eval": {"tokens": 128},
}


def run_script(name: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *args], cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          capture_output=True, text=True, timeout=300)


def test_train_ddp_script_reads_a_config_relative_to_the_caller(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
    p = run_script("train_ddp.sh", tmp_path, "c.yaml", "--out", "run", "--device", "cpu",
                   NGPUS="1")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "run" / "record.json").is_file()


def test_sweep_script_reads_a_config_relative_to_the_caller(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(
        {**TINY, "sweep": {"grid": {"model.hidden_dim": [8]}},
         "output": {"dir": "out"}}))
    p = run_script("sweep_local_gpus.sh", tmp_path, "c.yaml", "--no-analysis")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "results.csv").is_file()  # output.dir, also the caller's
