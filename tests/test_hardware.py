"""hardware: device pinning, precision from capability, the cited peak table, the cached CPU
peak, per-device RNG state and the run's own peak memory.

There is no GPU here: the CUDA tests replace torch.cuda's *query* functions (name, capability,
bf16 support, RNG state) with stand-ins and check what llmscale asks and decides; no CUDA
kernel runs and no GPU figure is claimed."""

from __future__ import annotations

import json
import os

import pytest
import torch

from llmscale import hardware as hw
from llmscale.errors import UserError

CUDA0 = torch.device("cuda:0")


def test_pin_worker_to_device_sets_the_env_and_names_cuda0(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert hw.pin_worker_to_device("cuda:3") == "cuda:0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    # an index counts in the parent's numbering when the parent was already restricted
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert hw.pin_worker_to_device("cuda:1") == "cuda:0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(UserError, match="shows only 2 GPU"):
        hw.pin_worker_to_device("cuda:2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert hw.pin_worker_to_device("cpu") == "cpu" and os.environ["CUDA_VISIBLE_DEVICES"] == "7"


def _fake_gpu(monkeypatch, name: str, capability: tuple[int, int], bf16: bool) -> list:
    calls: list = []

    def is_bf16_supported(including_emulation: bool = True):
        calls.append(("is_bf16_supported", including_emulation))
        return bf16 or including_emulation  # torch says yes to emulation on a V100

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
    return calls


def test_precision_follows_the_gpu_capability(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0), bf16=True)
    assert hw.resolve_precision("auto", CUDA0) == "bf16"
    assert hw.resolve_precision("bf16", CUDA0) == "bf16"
    calls = _fake_gpu(monkeypatch, "Tesla V100-SXM2-32GB", (7, 0), bf16=False)
    assert hw.resolve_precision("auto", CUDA0) == "fp16"  # + GradScaler in train.py
    assert ("is_bf16_supported", False) in calls  # emulation does not count
    with pytest.raises(UserError, match=r"bf16 needs .*V100.* 7\.0; use fp16 or auto"):
        hw.resolve_precision("bf16", CUDA0)
    assert hw.resolve_precision("fp32", CUDA0) == "fp32"
    cpu = torch.device("cpu")
    assert hw.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        hw.resolve_precision("fp16", cpu)


def test_peak_table_is_cited_and_has_no_bf16_where_the_gpu_has_none():
    for pattern, table, source in hw.GPU_PEAK_FLOPS:
        assert "datasheet" in source, pattern
        assert set(table) <= {"bf16", "fp16", "tf32", "fp32"} and table["fp32"] > 0
    v100, src = hw.gpu_peak("Tesla V100-SXM2-32GB", "bf16")
    assert v100 is None and "no bf16" in src
    assert hw.gpu_peak("Tesla V100-SXM2-32GB", "fp16")[0] == 125e12
    assert hw.gpu_peak("Tesla V100-PCIE-16GB", "fp16")[0] == 112e12
    assert hw.gpu_peak("Tesla T4", "bf16")[0] is None
    assert hw.gpu_peak("NVIDIA H100 PCIe", "bf16")[0] == 756.5e12
    assert hw.gpu_peak("NVIDIA H100 80GB HBM3", "bf16")[0] == 989.5e12
    assert hw.gpu_peak("NVIDIA A100-SXM4-80GB", "fp32")[0] == 19.5e12
    assert hw.gpu_peak("NVIDIA A100-SXM4-80GB", "fp32", tf32=True)[0] == 156e12
    assert hw.gpu_peak("NVIDIA A10G", "bf16")[0] is None  # not the A10's datasheet
    assert hw.gpu_peak("NVIDIA A10", "bf16")[0] == 125e12


def test_cpu_peak_is_measured_once_and_cached_with_how(tmp_path):
    rate, source = hw.cpu_peak(tmp_path)
    assert rate > 1e9 and source.startswith("measured: best of") and "load average" in source
    path = tmp_path / hw.CPU_PEAK_FILE
    table = json.loads(path.read_text())
    (key, entry), = table.items()
    assert f"{torch.get_num_threads()} threads" in key and entry["flops"] == rate
    assert isinstance(entry["busy"], bool)
    # a quiet measurement is final: read back, not measured again
    entry["busy"] = False
    path.write_text(json.dumps(table))
    again, source2 = hw.cpu_peak(tmp_path)
    assert again == rate and "cached" in source2
    # one taken on a busy machine is measured again, and the best figure is kept
    entry.update(flops=1e15, busy=True)
    path.write_text(json.dumps(table))
    hw._MEASURED.discard(key)  # as in a new process (within one, a busy figure is re-measured once)
    assert hw.cpu_peak(tmp_path)[0] == 1e15
    # refresh measures again in any case, and keeps the higher figure
    entry.update(flops=1e15, busy=False)
    path.write_text(json.dumps(table))
    assert hw.cpu_peak(tmp_path, refresh=True)[0] == 1e15


def test_rng_state_touches_only_the_run_device(monkeypatch):
    asked = []

    def forbidden(*a, **k):
        raise AssertionError("touches every GPU")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device="cuda": asked.append(("get", device)) or torch.zeros(8))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda st, device="cuda": asked.append(("set", device)))
    st = hw.rng_state(torch.device("cuda:1"))
    assert asked == [("get", torch.device("cuda:1"))]
    hw.set_rng_state(st, torch.device("cuda:0"))  # resumed on another GPU: restored there
    assert asked[-1] == ("set", torch.device("cuda:0"))
    cpu = hw.rng_state(torch.device("cpu"))
    assert "cuda" not in cpu
    a = torch.rand(3)
    hw.set_rng_state(cpu, torch.device("cpu"))
    assert torch.equal(torch.rand(3), a)


def test_run_memory_is_the_runs_own_peak_not_the_process_lifetime():
    cpu = torch.device("cpu")
    big = hw.RunMemory(cpu).start()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del x
    big_peak = big.stop().allocated
    small = hw.RunMemory(cpu).start()
    y = torch.ones(1024)
    del y
    small_peak = small.stop().allocated
    assert big_peak - small_peak > 48 * 2**20, (big_peak, small_peak)
    # the sampling fallback (where /proc/self/clear_refs is not writable) sees it too
    m = hw.RunMemory(cpu, interval_s=0.001, sample=True).start()
    z = torch.ones(64 * 2**20 // 4)
    sampled = m.stop().allocated  # stop() takes a last sample: z is still alive
    del z
    assert sampled >= small_peak + 48 * 2**20


def test_out_of_memory_is_recognised_on_cpu_and_cuda():
    assert hw.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert hw.is_out_of_memory(MemoryError())
    try:
        torch.empty(2**60, dtype=torch.uint8)
    except RuntimeError as e:
        assert hw.is_out_of_memory(e), e
    else:  # pragma: no cover - an exabyte allocated
        pytest.fail("allocating 2**60 bytes succeeded")
    assert not hw.is_out_of_memory(RuntimeError("shape mismatch"))


# A stand-in for torch.cuda's *query* functions, installed at interpreter start (sitecustomize)
# in the sweep process and in every pool worker it spawns. It logs each call with the
# process's CUDA_VISIBLE_DEVICES. No CUDA kernel can run (this torch has no CUDA), so each run
# ends `failed` at its first real CUDA operation; what the test checks is what happened
# before: which GPU each worker was given and which device it asked for.
STANDIN = '''
import json, os
import torch

LOG = os.environ["LLMSCALE_CUDA_STANDIN_LOG"]


def _visible():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _log(fn, *args):
    with open(LOG, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "visible": _visible(), "fn": fn,
                             "args": [str(a) for a in args]}) + "\\n")


def _count():
    v = _visible()
    return 2 if v is None else len([x for x in v.split(",") if x])


def _barrier():
    """A worker's first run waits here until every worker has reached its first run, so no
    worker drains the queue (runs fail fast here) before the other one starts: a condition on
    files, not a timing guess."""
    d, visible = os.environ["LLMSCALE_CUDA_STANDIN_BARRIER"], _visible()
    if visible is None:  # the sweep process itself
        return
    open(os.path.join(d, "ready-" + visible), "w").close()
    import time
    deadline = time.monotonic() + 120
    while len(os.listdir(d)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)


def _make(name, result):
    def f(*args, **kwargs):
        _log(name, *args, *kwargs.values())
        return result() if callable(result) else result
    return f


c = torch.cuda
c.is_available = _make("is_available", True)
c.device_count = _make("device_count", _count)
c.set_device = _make("set_device", None)
c.current_device = _make("current_device", 0)
c.get_device_name = _make("get_device_name", lambda: f"stand-in GPU {_visible()}")
c.get_device_capability = _make("get_device_capability", (9, 0))
_is_bf16 = _make("is_bf16_supported", True)
c.is_bf16_supported = lambda *a, **k: (_is_bf16(*a, **k), _barrier())[0]
c.reset_peak_memory_stats = _make("reset_peak_memory_stats", None)
c.max_memory_allocated = _make("max_memory_allocated", 0)
c.max_memory_reserved = _make("max_memory_reserved", 0)
c.synchronize = _make("synchronize", None)
c.empty_cache = _make("empty_cache", None)
c.get_rng_state = _make("get_rng_state", None)
c.set_rng_state = _make("set_rng_state", None)
c.get_rng_state_all = _make("get_rng_state_all", None)
c.manual_seed = _make("manual_seed", None)
c.manual_seed_all = _make("manual_seed_all", None)
c.set_rng_state_all = _make("set_rng_state_all", None)
'''


def test_pool_workers_each_see_one_gpu_as_cuda0(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from llmscale.records import read_results

    standin = tmp_path / "standin"
    standin.mkdir()
    (standin / "sitecustomize.py").write_text(STANDIN)
    log = tmp_path / "cuda_calls.jsonl"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ, PYTHONPATH=str(standin), LLMSCALE_CUDA_STANDIN_LOG=str(log),
               LLMSCALE_CUDA_STANDIN_BARRIER=str(barrier), OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = tmp_path / "sweep"
    sets = ["name=pin", "tokenizer.kind=bytes", "data.synthetic_tokens=3000",
            "data.synthetic_val_tokens=300", "model.embedding_dim=8", "train.batch_size=4",
            "train.seq_len=8", "train.tokens=320", "eval.tokens=200",
            "sweep.grid={model.hidden_dim: [8, 12, 16, 20]}"]
    proc = subprocess.run([sys.executable, "-m", "llmscale", "sweep", *[a for s in sets for a in
                                                                      ("--set", s)],
                           "--out", str(out), "--devices", "cuda:0,cuda:1", "--no-analysis"],
                          cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 3), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(os.listdir(barrier)) == ["ready-0", "ready-1"]  # both workers trained
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    by_pid: dict[int, list[dict]] = {}
    for c in calls:
        by_pid.setdefault(c["pid"], []).append(c)
    workers = {pid: cs for pid, cs in by_pid.items()
               if any(c["fn"] == "set_device" for c in cs)}
    # two workers, one per GPU, each seeing only its own
    assert sorted(cs[0]["visible"] for cs in workers.values()) == ["0", "1"], workers.keys()
    for cs in workers.values():
        assert len({c["visible"] for c in cs}) == 1  # pinned before its first CUDA query
        # every device a worker names is its cuda:0; nothing touches all GPUs
        named = [a for c in cs for a in c["args"] if a.startswith("cuda")]
        assert named and set(named) == {"cuda:0"}, named
        assert not [c for c in cs if c["fn"].endswith("_all")]
        fns = [c["fn"] for c in cs]
        assert fns.index("set_device") < fns.index("reset_peak_memory_stats")
        assert "manual_seed" in fns  # the run device's generator, seeded after set_device
    # every run was recorded, failing honestly at the first real CUDA operation, on its worker
    records, problems = read_results(out / "results.csv")
    assert not problems and len(records) == 4
    assert {r.device_name for r in records} <= {"stand-in GPU 0", "stand-in GPU 1"}
    assert all(r.status == "failed" and r.gpu_count == 1 for r in records), [
        (r.status, r.error) for r in records]


def test_runs_per_device_auto_packs_a_gpu_from_memory_and_measured_utilisation(tmp_path):
    """`--devices auto --runs-per-device auto` with one stand-in GPU (nvidia-smi on PATH for the
    sweep process, which never touches CUDA; the torch.cuda stand-in in every worker) and a
    sweep whose two completed GPU runs measured a rate at which each run left keeps the GPU at
    most 40% busy: the rule asks for two runs per GPU, and two workers start, both pinned to
    that GPU as cuda:0."""
    import subprocess
    import sys
    from pathlib import Path

    from llmscale.config import load_config
    from llmscale.records import RunRecord, read_results, upsert_record
    from llmscale.sweep import claim_sweep_dir, sweep_state
    from llmscale.sweep.estimate import Rate, eval_flops, utilisation

    standin = tmp_path / "standin"
    standin.mkdir()
    (standin / "sitecustomize.py").write_text(STANDIN)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU-00000001-aaaa, 81559'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    log, barrier = tmp_path / "cuda_calls.jsonl", tmp_path / "barrier"
    barrier.mkdir()
    for name in ("ready-a", "ready-b"):  # no barrier here: both workers start at once anyway
        (barrier / name).touch()
    sets = ["name=auto", "tokenizer.kind=bytes", "data.synthetic_tokens=3000",
            "data.synthetic_val_tokens=300", "model.embedding_dim=8", "train.batch_size=4",
            "train.seq_len=8", "train.tokens=320", "eval.tokens=200",
            "sweep.grid={model.hidden_dim: [8, 12, 16, 20, 24]}"]
    cfg = load_config(None, sets)
    out = tmp_path / "sweep"
    claim_sweep_dir(cfg, out, force=False)
    planned = sweep_state(cfg, out, probe_claims=False)
    done, left = planned[:2], planned[2:]

    def steps(p):
        return p.accounting.tokens // (p.cfg.train.batch_size * p.cfg.train.seq_len)

    # the rate at which the busiest run left computes 40% of its time, 1 ms of host per step
    overhead = 1e-3
    rate = max((p.accounting.flops + eval_flops(p.cfg, p.accounting)) / steps(p)
               for p in left) * 0.6 / (0.4 * overhead)
    assert max(utilisation(p.cfg, p.accounting, Rate("cuda", rate, overhead, 0, ""))
               for p in left) == pytest.approx(0.4)
    for p in done:
        t = steps(p) * overhead + p.accounting.flops / rate
        upsert_record(out / "results.csv", RunRecord(
            run_id=p.run_id, sweep="auto", status="completed", tokens=p.accounting.tokens,
            flops=p.accounting.flops, batch_size=4, seq_len=8, gpu_count=1,
            train_time_s=t, wall_time_s=t + 1.0))
    env = dict(os.environ, PYTHONPATH=str(standin), LLMSCALE_CUDA_STANDIN_LOG=str(log),
               LLMSCALE_CUDA_STANDIN_BARRIER=str(barrier), OMP_NUM_THREADS="1",
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-m", "llmscale", "sweep",
                           *[a for s in sets for a in ("--set", s)], "--out", str(out),
                           "--devices", "auto", "--runs-per-device", "auto", "--no-analysis"],
                          cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    k = min(2, os.cpu_count() or 1)
    assert f"auto: {k} run(s) per GPU = min(memory " in proc.stderr, proc.stderr
    assert "utilisation 2 (the busiest run computes 40% of its time; measured on 2 " \
           "completed cuda run(s)" in proc.stderr
    assert "worker on cuda:0 ready in" in proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    pids = {c["pid"] for c in calls}
    workers = {pid for pid in pids
               if any(c["pid"] == pid and c["fn"] == "set_device" for c in calls)}
    assert len(workers) == k
    assert {c["visible"] for c in calls} == {"0"}  # the sweep process itself asked CUDA nothing
    named = {a for c in calls for a in c["args"] if a.startswith("cuda")}
    assert named == {"cuda:0"}, named
    records, problems = read_results(out / "results.csv")
    assert not problems
    rest = [r for r in records if r.run_id in {p.run_id for p in left}]
    assert len(rest) == len(left) and all(
        r.status == "failed" and r.device_name == "stand-in GPU 0" for r in rest)
