#!/usr/bin/env python
"""One LSTM layer, forward + backward in bf16: cuDNN (nn.LSTM under autocast, what llmscale
trains with) against FlashRNN's fused kernels (PyPI `flashrnn`, Poeppel et al., ICLR 2025),
at B64 T128 H256/512/1024 and B256 T128 H512 (issue 23). Needs a CUDA GPU.

    pip install flashrnn && python scripts/bench_flashrnn.py [--json OUT]

Both sides include the input projection (cuDNN does it inside nn.LSTM; FlashRNN takes the
projected input Wx). Each time is the best of 3 windows of >= 1 s of steady-state steps; a
backend's kernel build (JIT compile and autotuning, paid once per shape) is its first call's
time less a steady step. llmscale adds a FlashRNN backend only where it wins by >= 1.3x
(docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

SHAPES = ((64, 128, 256), (64, 128, 512), (64, 128, 1024), (256, 128, 512))  # (B, T, H)


def timed(step) -> tuple[float, float]:
    """(first call's seconds, best steady seconds per call over 3 windows of >= 1 s)."""
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            step()
            n += 1
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / n)
    return first, best


def cudnn_step(B, T, H):
    lstm = torch.nn.LSTM(H, H, batch_first=True).cuda()
    x = torch.randn(B, T, H, device="cuda", requires_grad=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, _ = lstm(x)
        out.float().sum().backward()
    return step


def flashrnn_step(B, T, H, backend):
    from flashrnn import flashrnn

    w = torch.nn.Linear(H, 4 * H).cuda().to(torch.bfloat16)  # input projection, 4 gates
    R = (torch.randn(4, 1, H, H, device="cuda") / H**0.5).to(torch.bfloat16).requires_grad_()
    b = torch.zeros(4, 1, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    x = torch.randn(B, T, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def step():
        Wx = w(x).view(B, T, 4, 1, H)  # FlashRNN's BTGHD input layout
        h, _ = flashrnn(Wx, R, b, function="lstm", backend=backend, dtype="bfloat16")
        h[0].float().sum().backward()
    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--backends", default="cuda_fused,triton_fused")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| B | T | H | backend | ms per fwd+bwd | vs cuDNN | kernel build s |")
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    rows = []
    for B, T, H in SHAPES:
        _, base = timed(cudnn_step(B, T, H))
        rows.append({"B": B, "T": T, "H": H, "backend": "cudnn", "ms": base * 1e3})
        print(f"| {B} | {T} | {H} | cudnn | {base * 1e3:.3f} | 1.00 | - |", flush=True)
        for backend in args.backends.split(","):
            try:
                first, best = timed(flashrnn_step(B, T, H, backend))
            except Exception as e:  # noqa: BLE001 - a backend that cannot build is a result too
                rows.append({"B": B, "T": T, "H": H, "backend": backend, "error": f"{e}"[:300]})
                print(f"| {B} | {T} | {H} | {backend} | failed: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:120] if str(e) else ''} | | |", flush=True)
                continue
            rows.append({"B": B, "T": T, "H": H, "backend": backend, "ms": best * 1e3,
                         "speedup": base / best, "build_s": first - best})
            print(f"| {B} | {T} | {H} | {backend} | {best * 1e3:.3f} | {base / best:.2f} | "
                  f"{first - best:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
