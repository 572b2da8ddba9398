"""Sweeps that really train (tiny models on CPU): resume after SIGKILL, two concurrent sweep
processes (one with a two-worker pool), the submitit local executor, and the fast no-op rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmscale.cli.status import format_status
from llmscale.config import from_dict
from llmscale.layout import RESULTS_FILE
from llmscale.records import read_record_json, read_results
from llmscale.sweep import SweepTask, plan_sweep, run_dir_name, run_sweep

TINY = {
    "name": "tiny",
    "data": {"source": "synthetic", "synthetic_tokens": 2000, "synthetic_val_tokens": 200,
             "synthetic_vocab": 64},
    "tokenizer": {"kind": "bytes", "vocab_size": None},
    "model": {"embedding_dim": 8, "hidden_dim": 8, "num_layers": 1},
    "train": {"tokens": 1024, "batch_size": 4, "seq_len": 16, "lr": 1.0e-2},
    "eval": {"tokens": 128},
    "output": {"log_every_steps": 4},
}


def write_config(path: Path, sweep: dict, **sections) -> Path:
    raw = {**TINY, **sections, "sweep": sweep}
    path.write_text(yaml.safe_dump(raw))
    return path


def llmscale(*args: str, **kw) -> subprocess.Popen:
    # One thread per process: these tiny LSTMs gain nothing from two, and with the cores shared
    # (other tests, the second sweep process) oneDNN's spinning threads make each step ~1000x slower.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "llmscale", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def start_until_checkpoint(tmp_path: Path):
    """A sweep whose first run is long enough to interrupt mid-way (the second is short),
    started in a subprocess and returned once the first run has written a checkpoint."""
    cfg_path = write_config(tmp_path / "c.yaml",
                            {"runs": [{"model.hidden_dim": 8, "train.tokens": 200_000},
                                      {"model.hidden_dim": 12}]},
                            output={"checkpoint_every_tokens": 4096, "log_every_steps": 16})
    out = tmp_path / "s"
    runs = plan_sweep(from_dict(yaml.safe_load(cfg_path.read_text())))
    first = out / "runs" / run_dir_name(runs[0])
    p = llmscale("sweep", str(cfg_path), "--out", str(out), "--no-analysis")
    deadline = time.time() + 90
    from llmscale.checkpoint import has_checkpoint

    while not has_checkpoint(first):
        assert p.poll() is None, p.communicate()[1]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    return p, cfg_path, out, runs


def check_table(out: Path, runs) -> list:
    records, problems = read_results(out / RESULTS_FILE)
    assert problems == []
    ids = [r.run_id for r in records]
    assert sorted(ids) == sorted(r.run_id for r in runs), "lost or duplicate rows"
    assert all(r.status == "completed" for r in records), [(r.run_id, r.status, r.error)
                                                           for r in records]
    return records


def test_sweep_with_analysis_then_rerun_is_a_fast_noop(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", {"grid": {"model.hidden_dim": [8, 12]}})
    out = tmp_path / "s"
    p = llmscale("sweep", str(cfg_path), "--out", str(out))  # the default path: analysis too
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    runs = plan_sweep(from_dict(yaml.safe_load(cfg_path.read_text())))
    by_id = {r.run_id: r for r in check_table(out, runs)}
    for r in runs:  # joinable columns: run_dir relative to the sweep dir, the swept values
        assert by_id[r.run_id].run_dir == f"runs/{run_dir_name(r)}"
        assert by_id[r.run_id].sweep_point == f'{{"model.hidden_dim": {r.model.hidden_dim}}}'
        assert by_id[r.run_id].flops_budget is None
    # the analysis ran and succeeded: a report (two runs fit no law; the report says why)
    assert "warning: analysis" not in err, err
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    took = [ln for ln in err.splitlines() if "analysis: fit, plots and report in " in ln]
    assert len(took) == 1 and float(took[0].split(" in ")[1].split()[0]) > 0, err  # timed once
    touched = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}

    t0 = time.perf_counter()
    p = llmscale("sweep", str(cfg_path), "--out", str(out))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "2 done, 0 to train" in err
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == touched
    assert time.perf_counter() - t0 < 30  # generous: the benchmark measures the real figure

    p = llmscale("status", str(out))
    text, _ = p.communicate(timeout=60)
    assert "2 runs: 2 done, 0 running, 0 failed" in text

    # the sweep grows by one width: the finished runs are kept, only the new one trains
    grown = write_config(tmp_path / "c.yaml", {"grid": {"model.hidden_dim": [8, 12, 16]}})
    p = llmscale("sweep", str(grown), "--out", str(out), "--no-analysis")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "3 runs planned, 2 finished kept, 1 new" in err and "2 done, 1 to train" in err
    for r in runs:  # the old runs' directories were not touched
        old = out / "runs" / run_dir_name(r)
        assert {f: f.stat().st_mtime_ns for f in old.rglob("*") if f.is_file()} == \
            {f: t for f, t in touched.items() if old in f.parents}
    check_table(out, plan_sweep(from_dict(yaml.safe_load(grown.read_text()))))
    # and shrinks: the dropped run stays in results.csv, status names it
    write_config(tmp_path / "c.yaml", {"grid": {"model.hidden_dim": [8, 16]}})
    p = llmscale("sweep", str(grown), "--out", str(out), "--no-analysis")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "1 no longer in the plan" in err, err
    text, _ = llmscale("status", str(out)).communicate(timeout=60)
    assert "2 runs: 2 done" in text and "1 run(s) no longer in the sweep's plan" in text
    assert f"completed: {run_dir_name(runs[1])}" in text
    assert len(read_results(out / RESULTS_FILE)[0]) == 3


def test_resume_after_sigkill_mid_run(tmp_path):
    p, cfg_path, out, runs = start_until_checkpoint(tmp_path)
    first = out / "runs" / run_dir_name(runs[0])
    time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    assert not (first / "record.json").exists(), "run finished before the kill: raise tokens"
    from llmscale.checkpoint import load_checkpoint

    state = load_checkpoint(first, runs[0].run_id).state  # the newest the kill left whole
    step_at_kill, started = state["step"], state["started_at"]
    assert step_at_kill > 0

    p = llmscale("status", str(out))
    text, _ = p.communicate(timeout=60)
    assert "1 partial" in text and "1 todo" in text

    p = llmscale("sweep", str(cfg_path), "--out", str(out), "--no-analysis")
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    records = {r.run_id: r for r in check_table(out, runs)}
    rec = records[runs[0].run_id]
    # the killed run continued from its checkpoint: same start, the planned tokens in all
    assert rec.started_at == started
    assert rec.tokens >= 16_000 - 64
    assert read_record_json(first / "record.json").run_id == runs[0].run_id


def test_two_concurrent_sweeps_one_with_a_worker_pool(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", {"grid": {"model.hidden_dim": [8, 12, 16],
                                                           "train.lr": [0.01, 0.02]}},
                            train={**TINY["train"], "tokens": 4096})
    out = tmp_path / "s"
    runs = plan_sweep(from_dict(yaml.safe_load(cfg_path.read_text())))
    a = llmscale("sweep", str(cfg_path), "--out", str(out), "--no-analysis",
                 "--devices", "cpu,cpu")
    b = llmscale("sweep", str(cfg_path), "--out", str(out), "--no-analysis")
    _, err_a = a.communicate(timeout=240)
    _, err_b = b.communicate(timeout=240)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    check_table(out, runs)
    # every run trained exactly once across both processes (the others were skipped or seen done)
    trained = []
    for err in (err_a, err_b):
        for line in err.splitlines():
            if line.startswith("[") and ": completed" in line and "(" not in line.split(": completed")[1][:2]:
                trained.append(line.split("] ", 1)[1].split(":")[0])
    assert sorted(trained) == sorted(run_dir_name(r) for r in runs), (err_a, err_b)


def test_submitit_local_executor_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job processes inherit it (see llmscale())
    cfg = from_dict({**TINY, "sweep": {"grid": {"model.hidden_dim": [8, 12]},
                                       "slurm": {"time_min": 5, "cpus_per_task": 1, "mem_gb": 1}}})
    out = tmp_path / "s"
    records = run_sweep(cfg, out, executor="slurm", slurm_cluster="local", progress=False)
    assert len(records) == 2
    check_table(out, plan_sweep(cfg))
    assert any((out / "slurm").rglob("*_log.out"))  # real job processes ran the runs
    assert "2 done" in format_status(out)
    # preemption / timeout requeues the same call (the run resumes from its checkpoint)
    import submitit

    task = SweepTask()
    delayed = task.checkpoint({"cfg": {}}, "out")
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function is task and delayed.args == ({"cfg": {}}, "out")


def test_sigterm_preempts_the_run_stops_the_sweep_and_a_rerun_resumes(tmp_path):
    p, cfg_path, out, runs = start_until_checkpoint(tmp_path)
    first, second = (out / "runs" / run_dir_name(r) for r in runs)
    p.send_signal(signal.SIGTERM)  # what SLURM sends before preempting or at the time limit
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "sweep stopped" in err
    assert read_record_json(first / "record.json").status == "preempted"
    assert not second.exists()  # the sweep did not start the next run
    records, _ = read_results(out / RESULTS_FILE)
    assert [r.status for r in records] == ["preempted"]

    p = llmscale("sweep", str(cfg_path), "--out", str(out), "--no-analysis")
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    rec = {r.run_id: r for r in check_table(out, runs)}[runs[0].run_id]
    assert rec.tokens >= 16_000 - 64


def test_failed_runs_are_retried_only_when_asked(tmp_path):
    from llmscale.records import RunRecord, upsert_record, write_json

    cfg_path = write_config(tmp_path / "c.yaml", {"grid": {"model.hidden_dim": [8]}})
    out = tmp_path / "s"
    (run,) = plan_sweep(from_dict(yaml.safe_load(cfg_path.read_text())))
    run_dir = out / "runs" / run_dir_name(run)
    failed = RunRecord(run_id=run.run_id, sweep="tiny", status="diverged",
                       error="loss is nan at step 7", finished_at="2026-01-01T00:00:00+00:00")
    write_json(run_dir / "record.json", failed.to_dict())
    upsert_record(out / RESULTS_FILE, failed)

    p = llmscale("sweep", str(cfg_path), "--out", str(out), "--no-analysis")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "1 failed (not retried; --retry-failed)" in err
    assert [r.status for r in read_results(out / RESULTS_FILE)[0]] == ["diverged"]
    p = llmscale("status", str(out))
    text, _ = p.communicate(timeout=60)
    assert "1 failed" in text and "diverged: " in text and "loss is nan at step 7" in text

    p = llmscale("sweep", str(cfg_path), "--out", str(out), "--no-analysis", "--retry-failed")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    check_table(out, [run])
