"""Where a local sweep's runs execute: `--devices` and `--runs-per-device` expanded into worker
slots, one entry per worker. The executors and the estimate both use `expand`, so what
`--dry-run` plans for is what the sweep starts.

Nothing here imports torch or touches CUDA. GPUs are counted and sized with `nvidia-smi`, so
planning a sweep (validate, --dry-run) stays fast and the sweep process never holds a CUDA
context of its own (one would take GPU 0 memory from the workers). The rule behind
`--runs-per-device auto` is arithmetic over the estimate's time model and memory estimate:
`llmscale.sweep.estimate.auto_packing`.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from llmscale.config import check_device_name
from llmscale.errors import UserError

AUTO = "auto"  # --runs-per-device auto


def parse_runs_per_device(value: int | str) -> int | str:
    """An integer >= 1 or "auto"; anything else is one line naming the flag (exit 2)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or str(value).strip() not in (str(k), f"+{k}"):
        raise UserError(f"--runs-per-device {value}: allowed: an integer >= 1 or auto")
    return k


def device_names(devices: str | list[str] | None) -> list[str]:
    """The devices a local sweep uses, one entry each.

    None: the one device `train_run`'s "auto" picks (cuda:0 when a GPU is visible, else cpu);
    "auto": every visible GPU (cpu when there is none); else the listed names, checked
    ("cpu,cpu" is two CPU devices)."""
    if devices is None:
        return ["cuda:0" if gpu_count() else "cpu"]
    names = devices if isinstance(devices, list) else [d.strip() for d in devices.split(",")]
    names = [d for d in names if d]
    if not names:
        raise UserError("--devices: empty; allowed: cpu, auto or cuda:0,cuda:1,...")
    for d in names:
        check_device_name(d, "--devices")
    if names == [AUTO]:
        n = gpu_count()
        return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
    return ["cuda:0" if d == "cuda" else d for d in names]


def expand(names: list[str], runs_per_device: int) -> list[str]:
    """One slot per worker: each device repeated `runs_per_device` times."""
    if runs_per_device < 1:
        raise UserError(f"--runs-per-device {runs_per_device}: allowed: an integer >= 1 or auto")
    return [d for d in names for _ in range(runs_per_device)]


def kind(names: list[str]) -> str:
    """cpu when every slot is the CPU, else cuda (a mixed list trains on GPUs and CPU alike, and
    is estimated as GPUs)."""
    return "cpu" if all(d == "cpu" for d in names) else "cuda"


# --------------------------------------------------------------------------------------------
# GPUs, asked of nvidia-smi (no torch, no CUDA context)


def _gpus() -> list[tuple[str, int]] | None:
    """(UUID, total memory in bytes) of every physical GPU, in nvidia-smi's index order; None
    when nvidia-smi is not on PATH."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid,memory.total",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        uuid, _, mib = (part.strip() for part in line.partition(","))
        try:
            gpus.append((uuid, int(float(mib) * 2**20)))
        except ValueError:
            continue
    return gpus


def _visible(uuids: list[str]) -> list[int]:
    """The physical GPU indices this process may use, in its own cuda:N order: all of them, or
    CUDA_VISIBLE_DEVICES's entries (indices or UUID prefixes) up to the first one that names no
    GPU, as CUDA reads the variable."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return list(range(len(uuids)))
    shown: list[int] = []
    for entry in (e.strip() for e in env.split(",")):
        if entry.isdigit():
            idx = int(entry)
        else:
            matches = [i for i, u in enumerate(uuids) if entry and u.startswith(entry)]
            idx = matches[0] if len(matches) == 1 else -1
        if not 0 <= idx < len(uuids) or idx in shown:
            break
        shown.append(idx)
    return shown


def gpu_count() -> int:
    """GPUs visible to this process: nvidia-smi's, restricted by CUDA_VISIBLE_DEVICES. Without
    nvidia-smi on PATH, torch is asked (importing it takes seconds), unless there is no NVIDIA
    driver at all (no /dev/nvidiactl): then 0."""
    gpus = _gpus()
    if gpus is None:
        if not os.path.exists("/dev/nvidiactl"):
            return 0
        import torch

        return torch.cuda.device_count()
    return len(_visible([u for u, _ in gpus]))


def gpu_memory_bytes(index: int = 0) -> int | None:
    """Total memory of visible GPU `index` (this process's cuda:N numbering); None if unknown."""
    gpus = _gpus() or []
    visible = _visible([u for u, _ in gpus])
    return gpus[visible[index]][1] if 0 <= index < len(visible) else None
