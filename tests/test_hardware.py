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
    assert rate > 1e9 and source.startswith("measured: best of")
    table = json.loads((tmp_path / hw.CPU_PEAK_FILE).read_text())
    (key, entry), = table.items()
    assert f"{torch.get_num_threads()} threads" in key and entry["flops"] == rate
    again, source2 = hw.cpu_peak(tmp_path)
    assert again == rate and "cached" in source2
    # a refresh measured lower (a busier machine) keeps the best figure on record
    entry["flops"] = 1e15
    (tmp_path / hw.CPU_PEAK_FILE).write_text(json.dumps(table))
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
