"""What a run asks of the machine: its device, DDP set-up, peak FLOP/s, memory, provenance.

train.py imports from here; nothing here imports train.py. Every function touches only the
device it is given: no call enumerates or initialises other GPUs (`get_rng_state_all`,
`set_rng_state_all`, `torch.cuda.init()` are never used), so a worker pinned to one GPU
creates one CUDA context, on that GPU.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmscale.errors import UserError

# ------------------------------------------------------------------------------------------
# Devices


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto | cpu | cuda | cuda:N` -> a torch.device. The name's form is checked once, by
    config.check_device_name; here only whether that device exists."""
    from llmscale.config import check_device_name

    check_device_name(device)
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use cpu or auto")
    idx = local_rank if device == "cuda" else int(device.split(":", 1)[1])
    if not 0 <= idx < torch.cuda.device_count():
        raise UserError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
    return torch.device(f"cuda:{idx}")


def pin_worker_to_device(device: str) -> str:
    """Make this process see only `device`'s GPU; return the device name to use inside it.

    Call it first thing in a worker process, before anything initialises CUDA: with
    CUDA_VISIBLE_DEVICES set to the one physical GPU, that GPU is `cuda:0` in here, and every
    allocation, cuDNN handle or RNG call without an explicit index lands on it (not on GPU 0
    of the machine). `cpu` and `auto` are returned unchanged. An index is interpreted in the
    parent's numbering: when the parent itself was restricted (CUDA_VISIBLE_DEVICES=4,5),
    `cuda:1` is physical GPU 5.
    """
    from llmscale.config import check_device_name

    if not check_device_name(device, "--devices").startswith("cuda"):
        return device
    idx = 0 if device == "cuda" else int(device.split(":", 1)[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() != "":
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if not 0 <= idx < len(ids):
            raise UserError(f"--devices {device}: CUDA_VISIBLE_DEVICES={visible} shows only "
                            f"{len(ids)} GPU(s)")
        physical = ids[idx]
    else:
        physical = str(idx)
    os.environ["CUDA_VISIBLE_DEVICES"] = physical
    return "cuda:0"


def warm_up(device: str) -> float:
    """Pay this process's one-time device start-up now, once, before its first run: on CUDA the
    context, cuBLAS and cuDNN handles and the LSTM's kernels in the precision runs will use
    (on CPU oneDNN's). A pool worker calls it when it starts, so that a run's `setup_s` is its
    own (data, model) and not the start-up of whichever process it landed in. Returns the
    seconds it took."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    precision = resolve_precision("auto", dev)
    with torch.random.fork_rng(devices=[]):  # leave the CPU generator as it was
        lstm = torch.nn.LSTM(16, 16, batch_first=True).to(dev)
        head = torch.nn.Linear(16, 16).to(dev)
    x = torch.zeros(2, 4, 16, device=dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with (torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext()):
        out, _ = lstm(x)
        loss = head(out).float().square().mean()
    loss.backward()
    float(loss.detach())  # waits for the device
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world_size: int
    made_group: bool  # we initialised the process group, so we destroy it


def setup_distributed(device_arg: str) -> tuple[Dist, torch.device]:
    """Rank/world from the env (torchrun, or submitit's exported env); init DDP when > 1.

    On CUDA `set_device(local_rank)` comes before any other CUDA call, so NCCL, the caching
    allocator and cuDNN all start on this rank's GPU."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_arg, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    made = False
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        made = True
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return Dist(rank, local_rank, world, made), device


# ------------------------------------------------------------------------------------------
# Precision


def bf16_native(device: torch.device) -> bool:
    """True where the GPU has bf16 tensor cores (Ampere, sm_80, and later); emulation does not
    count (torch's default `including_emulation=True` says yes on a V100). torch asks the
    *current* device: `setup_distributed` has made that the run's device (`set_device`), and a
    pool worker sees only its own GPU."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on GPUs with native bf16, fp16 (+ GradScaler) on older GPUs, fp32 on CPU."""
    if device.type != "cuda":
        if precision == "fp16":
            raise UserError(f"train.precision: fp16 needs a CUDA device (got {device}); "
                            f"use fp32 or bf16 on CPU")
        return "fp32" if precision == "auto" else precision
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp16"
    if precision == "bf16" and not bf16_native(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(f"train.precision: bf16 needs a GPU with bf16 tensor cores (compute "
                        f"capability 8.0+); {torch.cuda.get_device_name(device)} is "
                        f"{major}.{minor}; use fp16 or auto")
    return precision


# ------------------------------------------------------------------------------------------
# Peak FLOP/s

# Dense (no sparsity) tensor-core peaks in FLOP/s per GPU, from each vendor spec sheet (cited
# per entry). `fp32` is plain FP32 (CUDA cores), `tf32` the TF32 tensor-core rate that fp32
# matmuls reach when torch allows TF32. A GPU without bf16 has no bf16 entry. Matched by regex
# on torch.cuda.get_device_name(); first match wins, so specific names come first.
GPU_PEAK_FLOPS: tuple[tuple[str, dict[str, float], str], ...] = (
    # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): H200 SXM FP16/BF16 1,979 TFLOPS
    # and TF32 989 TFLOPS with sparsity (dense: half); FP32 67 TFLOPS.
    (r"H200", {"bf16": 989.5e12, "fp16": 989.5e12, "tf32": 494.5e12, "fp32": 67e12},
     "NVIDIA H200 Tensor Core GPU datasheet (SXM)"),
    # NVIDIA H100 datasheet (resources.nvidia.com, "H100 Tensor Core GPU Datasheet"), with
    # sparsity halved: NVL BF16 1,671 -> 835.5, TF32 835 -> 417.5, FP32 60.
    (r"H100 NVL", {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12},
     "NVIDIA H100 datasheet (H100 NVL column)"),
    # same datasheet, PCIe: BF16 1,513 -> 756.5, TF32 756 -> 378, FP32 51.
    (r"H100 PCIe", {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378e12, "fp32": 51e12},
     "NVIDIA H100 datasheet (H100 PCIe column)"),
    # same datasheet, SXM: BF16 1,979 -> 989.5, TF32 989 -> 494.5, FP32 67.
    (r"H100", {"bf16": 989.5e12, "fp16": 989.5e12, "tf32": 494.5e12, "fp32": 67e12},
     "NVIDIA H100 datasheet (H100 SXM column)"),
    # NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4): BF16/FP16 312,
    # TF32 156, FP32 19.5 TFLOPS dense (SXM and PCIe alike).
    (r"A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
     "NVIDIA A100 Tensor Core GPU datasheet"),
    # NVIDIA L40S datasheet: BF16/FP16 733 and TF32 366 with sparsity (dense 366.5 / 183),
    # FP32 91.6 TFLOPS.
    (r"L40S", {"bf16": 366.5e12, "fp16": 366.5e12, "tf32": 183e12, "fp32": 91.6e12},
     "NVIDIA L40S datasheet"),
    # NVIDIA L4 datasheet: BF16/FP16 242 and TF32 120 with sparsity (dense 121 / 60), FP32 30.3.
    (r"\bL4\b", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
     "NVIDIA L4 Tensor Core GPU datasheet"),
    # NVIDIA A10 datasheet: BF16/FP16 125, TF32 62.5, FP32 31.2 TFLOPS dense. Not the A10G
    # (AWS's variant, clocked differently, no NVIDIA datasheet): \b keeps it out.
    (r"\bA10\b", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
     "NVIDIA A10 Tensor Core GPU datasheet"),
    # NVIDIA V100 datasheet (volta-v100-datasheet-update-us-1165301-r5): SXM2 tensor (fp16)
    # 125, FP32 15.7 TFLOPS; no bf16, no TF32. PCIe: 112 / 14.
    (r"V100.*PCIE|V100-PCIE", {"fp16": 112e12, "fp32": 14e12},
     "NVIDIA V100 datasheet (PCIe column)"),
    (r"V100", {"fp16": 125e12, "fp32": 15.7e12}, "NVIDIA V100 datasheet (SXM2 column)"),
    # NVIDIA T4 datasheet (t4-tensor-core-datasheet-951643): mixed-precision FP16/FP32 65,
    # FP32 8.1 TFLOPS; no bf16, no TF32.
    (r"\bT4\b", {"fp16": 65e12, "fp32": 8.1e12}, "NVIDIA T4 datasheet"),
)


def gpu_peak(name: str, precision: str, *, tf32: bool = False) -> tuple[float | None, str]:
    """(FLOP/s, where it comes from) for a GPU name and a run precision, from GPU_PEAK_FLOPS."""
    key = "tf32" if precision == "fp32" and tf32 else precision
    for pattern, table, source in GPU_PEAK_FLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            if key not in table:
                return None, f"{name} has no {key} peak ({source})"
            return table[key], f"table: {source}, {key} dense"
    return None, f"unknown GPU {name!r}: no peak in the table"


CPU_PEAK_FILE = "cpu_peak_flops.json"
_CPU_PEAK_SIZES = (1024, 2048)  # oneDNN's fp32 GEMM saturates here on 2..64 cores
_CPU_PEAK_TRIALS = 5  # each >= 0.05 s; the best trial counts (others' load only slows it)


def _fastest_matmul(n: int) -> tuple[str, Any]:
    """oneDNN's fp32 GEMM where torch has it (~2x MKL's torch.mm on AVX-512), else torch.mm."""
    gen = torch.Generator().manual_seed(0)  # never the global RNG: runs must replay exactly
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    try:
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        torch._C._nn.mkldnn_linear(am, bm, None)
        return "oneDNN mkldnn_linear fp32", lambda: torch._C._nn.mkldnn_linear(am, bm, None)
    except (RuntimeError, AttributeError):
        return "torch.mm fp32", lambda: torch.mm(a, b)


def measure_cpu_peak() -> tuple[float, str]:
    """fp32 matmul FLOP/s of this CPU with the fastest kernel: the best of several timed
    trials over sizes where oneDNN saturates (1024 and 2048 give the same rate on 2 cores).

    Each trial is timed two ways and the higher rate counts: by the wall clock, and by the
    process's CPU time per thread. Other processes on the machine slow the first (our threads
    wait for a core) but hardly the second, which counts only the time our threads ran; both
    can only err low (OpenMP threads spinning while they wait add CPU time), so the higher of
    the two is the better lower bound of what the cores do."""
    best, how = 0.0, "unmeasured"
    threads = torch.get_num_threads()
    cores = min(threads, os.cpu_count() or threads)
    for n in _CPU_PEAK_SIZES:
        name, fn = _fastest_matmul(n)
        fn()  # warm up: kernel selection, page faults
        for _ in range(_CPU_PEAK_TRIALS):
            reps, t0, c0 = 0, time.perf_counter(), time.process_time()
            while reps < 1 or time.perf_counter() - t0 < 0.05:
                fn()
                reps += 1
            flops = 2.0 * n ** 3 * reps
            wall = flops / (time.perf_counter() - t0)
            cpu = flops / max((time.process_time() - c0) / cores, 1e-9)
            if max(wall, cpu) > best:
                best = max(wall, cpu)
                how = f"{name} {n}x{n}x{n}, {'wall clock' if wall >= cpu else 'CPU time'}"
    return best, (f"measured: best of {_CPU_PEAK_TRIALS} trials x sizes "
                  f"{'/'.join(map(str, _CPU_PEAK_SIZES))} by wall clock and by CPU time per "
                  f"thread, {how}, {threads} threads")


def _cpu_peak_key() -> str:
    return f"{cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__}"


_MEASURED: set[str] = set()  # cache keys measured in this process (a busy one: not again)


def _busy() -> tuple[bool, str]:
    """Whether other work competes for the cores now (1-minute load average above the core
    count), and that figure in words."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return False, "load unknown"
    cpus = os.cpu_count() or 1
    return load > cpus, f"load average {load:.1f} on {cpus} CPUs"


def cpu_peak(cache_dir: str | Path | None = None, *, refresh: bool = False
             ) -> tuple[float | None, str]:
    """This CPU's peak, measured per (machine, thread count, torch) and cached in
    <llmscale cache>/cpu_peak_flops.json with how and under what load it was measured.

    Another process's load only ever makes the figure low, so the cache keeps the best
    measurement, and an entry measured on a busy machine is measured again (once per process)
    until a quiet measurement settles it. `refresh` measures again in any case."""
    from llmscale.atomic import atomic_write_text
    from llmscale.data.cache import cache_root

    path = Path(cache_root(str(cache_dir) if cache_dir else None)) / CPU_PEAK_FILE
    key = _cpu_peak_key()
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(table, dict)
    except (OSError, ValueError, AssertionError):
        table = {}
    entry = table.get(key)
    if entry and not refresh and not (entry.get("busy") and key not in _MEASURED):
        return float(entry["flops"]), f"{entry['source']} (cached {entry['measured_at']})"
    rate, source = measure_cpu_peak()
    busy, load = _busy()
    _MEASURED.add(key)
    if not rate:
        return None, source
    if entry and float(entry["flops"]) >= rate:
        entry["busy"] = entry.get("busy", False) and busy  # a quiet re-measure settles it
        new = entry
    else:
        new = {"flops": rate, "source": f"{source}, {load}", "measured_at": now_iso(),
               "busy": busy}
    table[key] = new
    try:
        atomic_write_text(path, json.dumps(table, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass  # an unwritable cache costs a re-measure next time, nothing else
    if new is entry:
        return float(entry["flops"]), f"{entry['source']} (cached {entry['measured_at']})"
    return rate, new["source"]


def peak_flops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """The FLOP/s a run's MFU is measured against, and its source."""
    if device.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32
        return gpu_peak(torch.cuda.get_device_name(device), precision, tf32=tf32)
    return cpu_peak()


# ------------------------------------------------------------------------------------------
# RNG: the run's own device only


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python, numpy and torch CPU generators, plus the run device's CUDA generator (only it:
    `get_rng_state_all` would create a context on every visible GPU)."""
    st: dict[str, Any] = {"torch": torch.get_rng_state(),
                          "numpy": json.dumps(_np_state_plain(np.random.get_state())),
                          "python": json.dumps(_py_state_plain(random.getstate()))}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    """Restore `rng_state`'s dict; the CUDA generator goes to this run's device, whatever index
    it had when saved (a requeued run may land on another GPU)."""
    torch.set_rng_state(st["torch"])
    n = json.loads(st["numpy"])
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = json.loads(st["python"])
    random.setstate((p[0], tuple(p[1]), p[2]))
    if device.type == "cuda" and st.get("cuda") is not None:
        torch.cuda.set_rng_state(st["cuda"], device)


def seed_everything(seed: int, device: torch.device | None = None) -> None:
    """Python, numpy, torch's CPU generator and the run device's CUDA generator (only it:
    torch.manual_seed would seed every visible GPU's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)  # what torch.manual_seed does for the CPU
    if device is not None and device.type == "cuda":
        torch.cuda.manual_seed(seed)  # the current device: set_device made it the run's


def _np_state_plain(s):
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def _py_state_plain(s):
    return [s[0], list(s[1]), s[2]]


# ------------------------------------------------------------------------------------------
# Memory: the run's own peak


@dataclass(frozen=True)
class MemoryPeak:
    allocated: int | None  # CUDA: peak bytes allocated by tensors; CPU: peak RSS of the run
    reserved: int | None  # CUDA: peak bytes held by the caching allocator; CPU: None


class RunMemory:
    """The peak memory of one run, not of the process that ran it.

    CUDA: the allocator's peak statistics are reset at `start` and read at `stop`.
    CPU: first the C allocator hands memory freed by earlier runs back to the system
    (glibc's malloc_trim: freed heap pages otherwise stay resident and would count as this
    run's), then Linux's peak resident set (VmHWM) is reset by writing 5 to
    /proc/self/clear_refs and read at `stop`; where that is not allowed, a thread samples
    VmRSS every `interval_s` from `start` (and can miss a peak shorter than that).
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005, *,
                 sample: bool = False):
        self.device, self.interval_s, self.sample = device, interval_s, sample
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0

    def start(self) -> RunMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _malloc_trim()
        if self.sample or not _reset_hwm():
            self._sampled = _status_kib("VmRSS") * 1024
            self._thread = threading.Thread(target=self._sample, daemon=True,
                                            name="llmscale-rss-sampler")
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sampled = max(self._sampled, _status_kib("VmRSS") * 1024)

    def stop(self) -> MemoryPeak:
        if self.device.type == "cuda":
            return MemoryPeak(int(torch.cuda.max_memory_allocated(self.device)),
                              int(torch.cuda.max_memory_reserved(self.device)))
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            return MemoryPeak(max(self._sampled, _status_kib("VmRSS") * 1024), None)
        return MemoryPeak(_status_kib("VmHWM") * 1024 or None, None)


def _malloc_trim() -> None:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to hand back this way


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kib("VmHWM") > 0
    except OSError:
        return False


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# ------------------------------------------------------------------------------------------
# Provenance


@functools.cache
def git_commit() -> str | None:
    """The commit of the llmscale checkout, best effort (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu: " + (platform.processor() or platform.machine())


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and the CPU allocator's failure (a plain RuntimeError: "can't
    allocate memory"), or Python's MemoryError: all three end a run as `oom`."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
