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


def test_gpu_check_on_cpu_walks_every_path_it_can(tmp_path):
    """scripts/gpu_check.py --allow-cpu --quick: every check that does not need a GPU runs on
    the CPU and passes (the ones that do say SKIP), and its tables come out."""
    import json
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--allow-cpu",
                        "--quick", "--out", str(tmp_path / "check")], cwd=tmp_path,
                       env={**os.environ, "LLMSCALE_CACHE": str(tmp_path / "cache")},
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    status = {name: st for name, st, _ in out["results"]}
    assert status == {"precision": "PASS", "onednn_lstm": "PASS", "fp32_train": "PASS",
                      "throughput": "PASS", "record_vs_bare": "PASS", "small_step": "MEAS",
                      "packing": "PASS", "oom": "PASS", "pinning": "SKIP", "ddp": "PASS"}, status
    tables = out["tables"]
    assert [r["hidden"] for r in tables["throughput"]] == [32, 64]
    assert all(len(r["windows_real_steps_per_s"]) == 3 for r in tables["throughput"])
    assert len(tables["record_vs_bare"]) == 3
    packing = tables["packing"]
    assert [r["k"] for r in packing] == [1, 2]
    assert all(r["worker_startup_s"] > 0 and r["train_s_max"] > 0 for r in packing)
    assert (tmp_path / "check" / "gpu_check.md").read_text().count("| ---: |") >= 3


def test_bench_flashrnn_says_it_needs_a_gpu():
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_flashrnn.py")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "needs a GPU" in p.stderr, p.stderr
