"""Sweeps on a real SLURM cluster: the one-node cluster of scripts/slurm_local.sh (partition
`cpu`, and `gpu` whose GRES is backed by dummy device files: the scheduler side of GPUs only,
torch sees none). Everything goes through the public CLI and the sweep directory's files.

Skipped, with the reason in the pytest summary (tests/conftest.py), where no such cluster
answers. Waits are on conditions (squeue states, files), each with a generous timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from llmscale.config import from_dict
from llmscale.layout import (
    RECORD_FILE,
    SLURM_DIR,
    parse_step,
    results_path,
    slurm_jobs_path,
)
from llmscale.records import read_record_json, read_results
from llmscale.sweep import plan_sweep, run_dir_name

# One group: the tests share the one cluster's CPUs and run one after another on one pytest-xdist
# worker (pyproject.toml), in parallel with the rest of the suite.
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]

TINY = {
    "name": "slurm-tiny",
    "data": {"source": "synthetic", "synthetic_tokens": 2000, "synthetic_val_tokens": 200,
             "synthetic_vocab": 64},
    "tokenizer": {"kind": "bytes", "vocab_size": None},
    "model": {"embedding_dim": 8, "hidden_dim": 8, "num_layers": 1},
    "train": {"tokens": 4096, "batch_size": 4, "seq_len": 16, "lr": 1.0e-2},
    "eval": {"tokens": 128},
    "output": {"log_every_steps": 16},
}
CPU = {"partition": "cpu", "gpus_per_run": 0, "cpus_per_task": 1, "mem_gb": 1, "time_min": 5}


def _cluster_problem() -> str | None:
    reason = os.environ.get("LLMSCALE_SLURM_UNAVAILABLE")
    if reason:
        return reason
    if shutil.which("sbatch") is None:
        return ("no SLURM cluster here (sbatch not on PATH); start the test cluster with "
                "`sudo scripts/slurm_local.sh start`")
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed: {e}"
    if r.returncode != 0:
        return f"sinfo failed: {r.stderr.strip()}; is the cluster up (scripts/slurm_local.sh status)?"
    parts = {line.split()[0].rstrip("*") for line in r.stdout.splitlines() if line.strip()}
    if not {"cpu", "gpu"} <= parts:
        return (f"needs the test cluster of scripts/slurm_local.sh (partitions cpu and gpu); "
                f"sinfo reports {sorted(parts)}")
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)


def wait_for(cond, what: str, timeout: float = 180.0):
    """Poll `cond` until it returns something true; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def env() -> dict[str, str]:
    # One thread per process (the jobs inherit the environment through sbatch): tiny LSTMs gain
    # nothing from more, and the cores are shared.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmscale", *args]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=env(), capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(cli(*args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def write_config(tmp_path: Path, slurm: dict, sweep: dict | None = None, **sections) -> Path:
    raw = {**TINY, **sections}
    raw["sweep"] = {**(sweep or {}), "executor": "slurm", "slurm": slurm}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def planned(cfg_path: Path):
    return plan_sweep(from_dict(yaml.safe_load(cfg_path.read_text())))


def jobs(out: Path) -> dict[str, list[dict]]:
    path = slurm_jobs_path(out)
    return json.loads(path.read_text())["runs"] if path.is_file() else {}


def task_ids(out: Path) -> dict[str, str]:
    """{run_id: latest task id} from the sweep directory."""
    return {rid: subs[-1]["job_id"] for rid, subs in jobs(out).items()}


def squeue(task: str) -> tuple[str, str]:
    """(state, node) of one array task, ended ones included (MinJobAge keeps them)."""
    r = subprocess.run(["squeue", "-h", "-r", "--states=all", "-j", task.split("_")[0],
                        "-o", "%i %T %N"], capture_output=True, text=True, timeout=30)
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == task:
            return parts[1], parts[2] if len(parts) > 2 else ""
    return "", ""


def scontrol_job(task: str) -> str:
    return subprocess.run(["scontrol", "-d", "show", "job", task], capture_output=True,
                          text=True, timeout=30).stdout


def completed(out: Path, runs) -> dict:
    records, problems = read_results(results_path(out))
    assert problems == []
    by_id = {r.run_id: r for r in records}
    assert sorted(by_id) == sorted(r.run_id for r in runs), "lost or duplicate rows"
    bad = [(r.run_id, r.status, r.error) for r in records if r.status != "completed"]
    assert not bad, bad
    return by_id


def task_log(out: Path, task: str) -> str:
    return (out / SLURM_DIR / task / f"{task}_0_log.err").read_text()


def submission_script(out: Path) -> str:
    (script,) = (out / SLURM_DIR).glob("*/*_submission.sh")
    return script.read_text()


def full_tokens(run) -> int:
    """Tokens of the whole run: whole optimizer steps of batch_size x seq_len."""
    per_step = run.train.batch_size * run.train.seq_len
    return run.train.tokens // per_step * per_step


def has_checkpoint(run_dir: Path) -> bool:
    from llmscale import checkpoint  # imports torch: only when a test needs it

    return checkpoint.has_checkpoint(run_dir)


# --------------------------------------------------------------------------------------------


def test_cpu_partition_sweep_end_to_end_then_a_rerun_submits_nothing(tmp_path):
    site = {"account": "llmscale-test", "qos": "normal", "constraint": "llmscale",
            "setup": ["export LLMSCALE_SETUP_MARK=from-setup",
                      "echo \"setup ran: $LLMSCALE_SETUP_MARK\" >&2"],
            "additional": {"comment": "llmscale-slurm-test"}}
    cfg = write_config(tmp_path, {**CPU, **site}, {"grid": {"model.hidden_dim": [8, 12]}})
    runs = planned(cfg)
    out = tmp_path / "s"
    r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
    assert r.returncode == 0, r.stderr
    records = completed(out, runs)
    assert all(rec.gpu_count == 0 and rec.world_size == 1 for rec in records.values())
    # a CPU-only array: no GPU request in the generated sbatch script
    script = submission_script(out)
    # (no #SBATCH line asks for a GPU; paths in the script may contain "gpu" of their own)
    sbatch = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert "#SBATCH --partition=cpu" in sbatch
    assert not [ln for ln in sbatch if "gpu" in ln or "gres" in ln], sbatch
    # the site settings reach sbatch, and the setup lines run in the job before the task
    for line in ("--account=llmscale-test", "--qos=normal", "--constraint=llmscale",
                 "--comment=llmscale-slurm-test", "export LLMSCALE_SETUP_MARK=from-setup"):
        assert line in script, line
    # every run's task id is in the sweep directory, and SLURM knows the task ran to the end
    ids = task_ids(out)
    assert sorted(ids) == sorted(r.run_id for r in runs)
    for task in ids.values():
        assert squeue(task)[0] == "COMPLETED", task
        assert "Comment=llmscale-slurm-test" in scontrol_job(task)
    log_err = next((out / SLURM_DIR).glob("*/*_0_log.err")).read_text()
    assert "setup ran: from-setup" in log_err, log_err
    # quiet: at most one note about the missing accounting, no per-poll warnings
    assert r.stderr.count("sacct") <= 1 and "Bypassing" not in r.stderr, r.stderr
    # a rerun finds everything done: nothing submitted, nothing recorded anew
    before = jobs(out)
    r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
    assert r.returncode == 0, r.stderr
    assert "array task(s) as job" not in r.stderr and jobs(out) == before


def test_gpu_partition_asks_for_the_gres(tmp_path):
    cfg = write_config(tmp_path, {**CPU, "partition": "gpu", "gpus_per_run": 1})
    (run,) = planned(cfg)
    out = tmp_path / "s"
    r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
    assert r.returncode == 0, r.stderr
    rec = completed(out, [run])[run.run_id]
    assert "#SBATCH --gpus-per-node=1" in submission_script(out)
    task = task_ids(out)[run.run_id]
    state, node = squeue(task)
    assert state == "COMPLETED" and node.endswith("-gpu"), (state, node)  # the GPU node
    assert "JOB_GRES=gpu:1" in scontrol_job(task)  # SLURM allocated one (dummy) GPU to it
    # the dummy GRES has no GPU behind it: the run says what it really ran on
    assert rec.gpu_count == 0


def test_requeue_mid_run_resumes_and_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    long = {"train": {**TINY["train"], "tokens": 120_000},
            "output": {"log_every_steps": 64, "checkpoint_every_tokens": 4096}}
    cfg = write_config(tmp_path, CPU, **long)
    (run,) = planned(cfg)
    out = tmp_path / "s"
    run_dir = out / "runs" / run_dir_name(run)
    ref = tmp_path / "ref"  # the same run without interruption, in one process, meanwhile
    p_ref = start_cli("train", str(cfg), "--out", str(ref), "--device", "cpu")
    p = start_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
    try:
        task = wait_for(lambda: task_ids(out).get(run.run_id), "the task id in jobs.json")
        wait_for(lambda: has_checkpoint(run_dir) and squeue(task)[0] == "RUNNING",
                 "a running task with a checkpoint")
        subprocess.run(["scontrol", "requeue", task], check=True, timeout=30)
        _, err = p.communicate(timeout=300)
        _, ref_err = p_ref.communicate(timeout=300)
    finally:
        p.kill()
        p_ref.kill()
    # the waiting sweep saw the requeued task as pending, and returned when the run completed
    assert p.returncode == 0, err
    rec = completed(out, [run])[run.run_id]
    assert "Restarts=1" in scontrol_job(task)
    log = task_log(out, task)
    assert "preempted (stopped by SIGTERM" in log and "resuming from its checkpoint" in log, log
    assert p_ref.returncode == 0, ref_err
    want = read_record_json(ref / RECORD_FILE)
    assert rec.val_loss == want.val_loss and rec.train_loss == want.train_loss
    from safetensors.torch import load_file

    from llmscale.checkpoint import weights_path

    got = load_file(weights_path(run_dir))
    ref_w = load_file(weights_path(ref))
    assert sorted(got) == sorted(ref_w)
    assert all(got[k].numpy().tobytes() == ref_w[k].numpy().tobytes() for k in got)  # bitwise


def test_time_limit_signal_checkpoints_requeues_and_completes(tmp_path):
    # time_min 1 with the warning 5 s before the limit. SLURM checks limits every 30 s and
    # signals at the check before the warning is due, so it comes 25-55 s after a start, and
    # the kill at the limit at least 30 s later. The run must still be training at 55 s,
    # whatever this machine's speed and load. Its length comes from the CPU time that training
    # takes here on one thread, as in the job: the job's one thread cannot train faster than
    # one whole core, so its run lasts at least that long in wall time. A wall-clock rate
    # bounds nothing (measured while the other pytest worker loaded the machine, the job then
    # trained twice as fast and finished before the signal), and neither does one short run's
    # CPU time, whose setup (data, evaluation, checkpoint) is a third of it, or the first
    # run's in a process (imports, caches: the rate came out 7x too high). So: a run to warm
    # up, then the rate is the difference between two runs, logging as the job does. On a
    # loaded machine the job's run takes longer, is signalled again after its resume and
    # requeues again: the test holds for any number of requeues.
    from llmscale.train import train_run

    train = {**TINY["train"], "batch_size": 8}
    logging_as_job = {"log_every_steps": 256}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu, toks = [], []
        for n in (20_000, 100_000, 300_000):
            cal = write_config(tmp_path, CPU, train={**train, "tokens": n},
                               output=logging_as_job)
            cpu0 = time.process_time()
            rec = train_run(planned(cal)[0], tmp_path / f"cal{n}", "cpu", progress=False)
            cpu.append(time.process_time() - cpu0)
            toks.append(rec.tokens)
            assert rec.status == "completed", rec.error
    finally:
        torch.set_num_threads(threads)
    rate = (toks[2] - toks[1]) / (cpu[2] - cpu[1])  # tokens per CPU-second of training
    tokens = int(rate * 75)  # 75 s of one core's training: longer than time_min
    slurm = {**CPU, "time_min": 1, "signal_delay_s": 5}
    cfg = write_config(tmp_path, slurm, train={**train, "tokens": tokens},
                       output={**logging_as_job, "checkpoint_every_tokens": tokens // 4})
    (run,) = planned(cfg)
    out = tmp_path / "s"
    r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --signal=USR2@5" in submission_script(out)
    rec = completed(out, [run])[run.run_id]
    assert rec.tokens == full_tokens(run)
    task = task_ids(out)[run.run_id]
    log = task_log(out, task)
    # warned, checkpointed (stopped by the SIGUSR1 the warning turns into), requeued, resumed
    assert "time-limit warning" in log and "preempted (stopped by SIGUSR1" in log, log
    assert "requeueing task" in log and "resuming from its checkpoint" in log, log
    assert "Restarts=0" not in scontrol_job(task)
    assert squeue(task)[0] == "COMPLETED"  # never killed at the limit itself (TIMEOUT)


def test_no_wait_status_and_no_double_submission(tmp_path):
    # two runs, one task at a time: the second waits in the queue behind the first
    slurm = {**CPU, "max_parallel": 1}
    cfg = write_config(tmp_path, slurm, {"grid": {"model.hidden_dim": [8, 12]}},
                       train={**TINY["train"], "tokens": 30_000})
    runs = planned(cfg)
    out = tmp_path / "s"
    r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis", "--no-wait")
    assert r.returncode == 3, r.stderr  # submitted, still queued
    assert "still queued or running" in r.stderr
    ids = task_ids(out)
    assert sorted(ids) == sorted(x.run_id for x in runs)
    states = {t: squeue(t)[0] for t in ids.values()}
    assert "PENDING" in states.values(), states  # it returned before the tasks ended
    # status shows the queued (and running) tasks with their ids
    st = run_cli("status", str(out))
    assert st.returncode == 0, st.stderr
    for x in runs:
        line = next(ln for ln in st.stdout.splitlines() if run_dir_name(x) in ln
                    and ids[x.run_id] in ln)
        assert "queued" in line or "running" in line, st.stdout
    # a rerun while they are queued submits nothing and waits for them to end
    before = jobs(out)
    array = {t.split("_")[0] for t in ids.values()}
    r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
    assert r.returncode == 0, r.stderr
    assert "array task(s) as job" not in r.stderr and "not submitted again" in r.stderr
    after = jobs(out)
    assert {rid: [s["job_id"] for s in subs] for rid, subs in after.items()} == {
        rid: [s["job_id"] for s in subs] for rid, subs in before.items()}
    mine = subprocess.run(["squeue", "-h", "--states=all", "-n", "llmscale-slurm-tiny",
                           "-o", "%F"], capture_output=True, text=True).stdout.split()
    assert array <= set(mine)
    completed(out, runs)
    assert all(squeue(t)[0] == "COMPLETED" for t in ids.values())


def test_ddp_across_two_tasks_matches_one_process(tmp_path):
    slurm = {**CPU, "tasks_per_run": 2}
    train = {**TINY["train"], "tokens": 8000, "micro_batch_size": 2}
    cfg = write_config(tmp_path, slurm, train=train)
    (run,) = planned(cfg)
    out, ref = tmp_path / "s", tmp_path / "ref"
    p_ref = start_cli("train", str(cfg), "--out", str(ref), "--device", "cpu")  # meanwhile
    try:
        r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
        _, ref_err = p_ref.communicate(timeout=300)
    finally:
        p_ref.kill()
    assert r.returncode == 0, r.stderr
    assert p_ref.returncode == 0, ref_err
    assert "#SBATCH --ntasks-per-node=2" in submission_script(out)
    rec = completed(out, [run])[run.run_id]
    assert rec.world_size == 2 and rec.gpu_count == 0
    one = read_record_json(ref / RECORD_FILE)
    assert one.world_size == 1 and one.tokens == rec.tokens
    assert rec.val_loss == pytest.approx(one.val_loss, rel=1e-4)
    assert rec.train_loss == pytest.approx(one.train_loss, rel=1e-4)


def training_pid(task: str) -> int | None:
    """The pid of the task's Python process (submitit's runner), from scontrol listpids."""
    r = subprocess.run(["scontrol", "listpids", task], capture_output=True, text=True, timeout=30)
    for line in r.stdout.splitlines()[1:]:
        pid = line.split()[0]
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and b"srun" not in cmd:
            return int(pid)
    return None


def step_of(run_dir: Path) -> int:
    from llmscale.checkpoint import latest_dir

    newest = latest_dir(run_dir)  # step-<N>: whole by construction, its step in its name
    step = parse_step(newest.name) if newest is not None else None
    return -1 if step is None else step


def test_hard_kill_records_a_status_and_a_rerun_resumes(tmp_path):
    long = {"train": {**TINY["train"], "tokens": 80_000},
            "output": {"log_every_steps": 64, "checkpoint_every_tokens": 4096}}
    cfg = write_config(tmp_path, CPU, **long)
    (run,) = planned(cfg)
    out = tmp_path / "s"
    run_dir = out / "runs" / run_dir_name(run)

    def interrupt(kill) -> tuple[str, str]:
        p = start_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
        try:
            before = jobs(out).get(run.run_id, [])
            task = wait_for(lambda: len(jobs(out).get(run.run_id, [])) > len(before)
                            and task_ids(out)[run.run_id], "a new task id in jobs.json")
            step = step_of(run_dir) if has_checkpoint(run_dir) else -1
            wait_for(lambda: has_checkpoint(run_dir) and step_of(run_dir) > step
                     and squeue(task)[0] == "RUNNING", "a running task with a new checkpoint")
            kill(task)
            _, err = p.communicate(timeout=180)
        finally:
            p.kill()
        assert p.returncode == 4, err  # the run stopped before finishing
        assert run_dir_name(run) in err and "resumes" in err, err
        return task, err

    # scancel --signal=KILL: SLURM cancels the job (SIGTERM, then SIGKILL after KillWait), the
    # run checkpoints and records why it stopped
    first, _ = interrupt(lambda task: subprocess.run(["scancel", "--signal=KILL", task],
                                                     check=True, timeout=30))
    (rec,) = read_results(results_path(out))[0]
    assert rec.status == "preempted" and rec.error, rec
    assert jobs(out)[run.run_id][-1]["state"] == "CANCELLED"
    # a rerun resumes; then the training process itself is killed outright (no chance to write
    # anything): the waiting sweep records the status, naming the task
    second, _ = interrupt(lambda task: os.kill(wait_for(lambda: training_pid(task), "the pid"),
                                               9))
    (rec,) = read_results(results_path(out))[0]
    assert second != first and rec.status == "preempted" and second in rec.error, rec
    assert jobs(out)[run.run_id][-1]["state"] in ("FAILED", "CANCELLED")
    assert "resuming from its checkpoint" in task_log(out, second)
    st = run_cli("status", str(out))
    assert f"stopped: {run_dir_name(run)}: task {second}" in st.stdout, st.stdout
    r = run_cli("sweep", str(cfg), "--out", str(out), "--no-analysis")
    assert r.returncode == 0, r.stderr
    assert completed(out, [run])[run.run_id].tokens == full_tokens(run)
    third = task_ids(out)[run.run_id]
    assert third != second and "resuming from its checkpoint" in task_log(out, third)


def test_bad_partition_or_gpus_on_a_cpu_partition_is_one_line_exit_2(tmp_path):
    cfg = write_config(tmp_path, CPU)
    r = run_cli("sweep", str(cfg), "--out", str(tmp_path / "s"), "--partition", "nope")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "'nope'" in r.stderr and "cpu" in r.stderr, r.stderr
    r = run_cli("sweep", str(cfg), "--out", str(tmp_path / "s"), "--gpus-per-run", "1")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1, r.stderr
    assert "'cpu' has no GPUs" in r.stderr and "gpu" in r.stderr.split("GPUs:")[-1], r.stderr
    # sbatch refusing what the site settings asked: its reason, on one line
    r = run_cli("sweep", str(cfg), "--out", str(tmp_path / "s"),
                "--set", "sweep.slurm.additional.reservation=nope")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "sbatch refused" in last and "reservation" in last and "Traceback" not in r.stderr
    assert "sbatch: error" not in r.stderr.replace(last, ""), r.stderr  # said once
    assert not slurm_jobs_path(tmp_path / "s").exists()  # nothing was submitted


def test_one_note_when_accounting_is_unavailable(capsys):
    from llmscale.sweep.executors import slurm as executors  # its module-level note flag

    sacct = subprocess.run(["sacct", "-n", "-j", "1"], capture_output=True, text=True, timeout=30)
    if sacct.returncode == 0:
        pytest.skip("this cluster has accounting (sacct answers)")
    executors._SACCT_NOTED = False  # the note is once per process
    gone = "999999_0"  # a task squeue does not know
    for _ in range(3):  # polls
        assert executors.task_states([gone]) == {gone: ("UNKNOWN", "not in squeue or sacct")}
    err = capsys.readouterr().err
    assert err.count("note: SLURM accounting is not available") == 1, err
    assert err.count("\n") == 1, err
