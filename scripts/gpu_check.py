#!/usr/bin/env python
"""Check llmscale's CUDA paths on this machine and measure throughput, in under 5 minutes.

    python scripts/gpu_check.py [--out DIR] [--quick]
    python scripts/gpu_check.py --allow-cpu --quick     # the same checks on CPU (gloo, fp32)

Checks, each PASS / FAIL / SKIP with its figures:
  1. cudnn_lstm   the LSTM forward runs cuDNN kernels under bf16 autocast and matches fp32 on CPU
  2. bf16_train   a real `train_run` with bf16 autocast completes and learns
  3. throughput   tokens/s, achieved TFLOP/s and MFU of the real training path per hidden size
  4. ddp          `llmscale train` under torchrun over every GPU (NCCL) against one GPU with the
                  same global batch: equal loss within bf16 tolerance; the speed-up
  5. packing      a sweep of small runs with several runs per GPU: all complete; the speed-up
                  over one run at a time
Exit code 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmscale.config import load_config  # noqa: E402
from llmscale.records import read_record_json  # noqa: E402

RESULTS: list[tuple[str, str, str]] = []


def report(name: str, status: str, detail: str) -> None:
    RESULTS.append((name, status, detail))
    print(f"[{status:4s}] {name}: {detail}", flush=True)


def base_overrides(device_kind: str) -> list[str]:
    # The synthetic language with a 4k BPE: no download, and the data is ready in seconds.
    return ["data.source=synthetic", "tokenizer.kind=bpe", "tokenizer.vocab_size=4096",
            "train.batch_size=64", "train.seq_len=128", "eval.tokens=65536",
            f"train.precision={'auto' if device_kind == 'cuda' else 'fp32'}"]


def check_cudnn_lstm(device: str) -> None:
    from llmscale.model import LargeLanguageModel

    if not device.startswith("cuda"):
        report("cudnn_lstm", "SKIP", "no CUDA device")
        return
    torch.manual_seed(0)
    model = LargeLanguageModel(4096, 512, 512, 2)
    x = torch.randint(0, 4096, (16, 64))
    with torch.no_grad():
        ref = model(x)
        model = model.to(device)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x.to(device))
            torch.cuda.synchronize()
    names = {e.name for e in prof.key_averages()}
    rnn = sorted(n for n in names if any(k in n.lower() for k in ("cudnn", "rnn", "lstm")))
    err = ((out.float().cpu() - ref).abs().max() / ref.abs().max()).item()
    ok = torch.backends.cudnn.enabled and bool(rnn) and err < 5e-2
    report("cudnn_lstm", "PASS" if ok else "FAIL",
           f"cudnn {torch.backends.cudnn.version()}, kernels {rnn[:3]}, bf16 vs fp32 max rel "
           f"diff {err:.2e}, output dtype {out.dtype}")


def train(overrides: list[str], out: Path, device: str, extra_env=None, nproc: int = 1):
    """`llmscale train` in a fresh process (under torchrun when nproc > 1); its record."""
    cmd = [sys.executable, "-m", "llmscale", "train"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), "-m", "llmscale", "train"]
    for o in overrides:
        cmd += ["--set", o]
    cmd += ["--out", str(out), "--device", device]
    env = dict(os.environ, **(extra_env or {}))
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if not (out / "record.json").exists():
        raise RuntimeError(f"no record from {' '.join(cmd)}: {p.stderr[-1500:]}")
    return read_record_json(out / "record.json")


def check_bf16_train(device: str, kind: str, work: Path, tokens: int) -> None:
    sets = base_overrides(kind) + ["model.hidden_dim=256", "model.embedding_dim=256",
                                   f"train.tokens={tokens}"]
    rec = train(sets, work / "bf16", device)
    learned = rec.val_loss is not None and rec.val_loss < math.log(4096) - 1.0
    ok = rec.status == "completed" and learned
    report("bf16_train", "PASS" if ok else "FAIL",
           f"status {rec.status}, precision {load_config(None, sets).train.precision}, val_loss "
           f"{rec.val_loss:.3f} (uniform {math.log(4096):.2f}), {rec.tokens_per_s:,.0f} tok/s, "
           f"mfu {rec.mfu:.3f} of {rec.peak_flops:.3g} FLOP/s ({rec.peak_flops_source})")


def check_throughput(device: str, kind: str, work: Path, sizes: list[int], tokens: int) -> None:
    print(f"{'hidden':>7} {'params_nonemb':>14} {'tok/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'peak GB':>8}", flush=True)
    for h in sizes:
        sets = base_overrides(kind) + [f"model.hidden_dim={h}", f"model.embedding_dim={h}",
                                       f"train.tokens={tokens}", "eval.tokens=8192"]
        rec = train(sets, work / f"tp{h}", device)
        tflops = rec.tokens_per_s * rec.flops_per_token / 1e12
        print(f"{h:>7} {rec.params_nonembedding:>14,} {rec.tokens_per_s:>10,.0f} {tflops:>8.2f} "
              f"{rec.mfu:>6.3f} {rec.peak_memory_bytes / 1e9:>8.2f}", flush=True)
        if rec.status != "completed":
            report("throughput", "FAIL", f"hidden {h}: {rec.status} {rec.error}")
            return
    report("throughput", "PASS", f"{len(sizes)} sizes, figures above")


def check_ddp(kind: str, work: Path, tokens: int) -> None:
    n = torch.cuda.device_count() if kind == "cuda" else 2
    if n < 2:
        report("ddp", "SKIP", "one GPU: NCCL DDP needs two or more")
        return
    sets = base_overrides(kind) + ["model.hidden_dim=512", "model.embedding_dim=512",
                                   f"train.tokens={tokens}"]
    device = "auto" if kind == "cuda" else "cpu"
    one = train(sets, work / "ddp1", "cuda:0" if kind == "cuda" else "cpu")
    many = train(sets, work / f"ddp{n}", device, nproc=n)
    rel = abs(many.val_loss - one.val_loss) / one.val_loss
    tol = 2e-2 if kind == "cuda" else 1e-4  # bf16 reductions differ in order across ranks
    ok = many.status == "completed" and many.world_size == n and rel < tol
    report("ddp", "PASS" if ok else "FAIL",
           f"{n} ranks: val_loss {many.val_loss:.4f} vs 1 rank {one.val_loss:.4f} (rel "
           f"{rel:.1e}); {many.tokens_per_s:,.0f} vs {one.tokens_per_s:,.0f} tok/s "
           f"(x{many.tokens_per_s / one.tokens_per_s:.2f}); gpu_count {many.gpu_count}")


def check_packing(kind: str, work: Path, tokens: int) -> None:
    from llmscale.sweep import run_sweep

    grid = "{model.hidden_dim: [64, 96, 128, 160, 192, 224]}"
    sets = base_overrides(kind) + [f"train.tokens={tokens}", "eval.tokens=8192",
                                   f"sweep.grid={grid}", "name=gpu_check_packing"]
    cfg = load_config(None, sets)
    device = "cuda:0" if kind == "cuda" else "cpu"
    timings = {}
    for k in (1, 3):
        t0 = time.perf_counter()
        records = run_sweep(cfg, work / f"pack{k}", devices=",".join([device] * k)
                            if kind == "cpu" else device, runs_per_device=1 if kind == "cpu" else k,
                            progress=False)
        timings[k] = time.perf_counter() - t0
        if not all(r.status == "completed" for r in records) or len(records) != 6:
            report("packing", "FAIL", f"{k} per device: {[r.status for r in records]}")
            return
    report("packing", "PASS", f"6 runs: {timings[1]:.1f} s one at a time, {timings[3]:.1f} s "
           f"three per device (x{timings[1] / timings[3]:.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and tokens")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU when there is no GPU")
    args = ap.parse_args()
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu" and not args.allow_cpu:
        print("no CUDA device: run on a GPU machine, or pass --allow-cpu", file=sys.stderr)
        return 2
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, devices {names or ['cpu']}",
          flush=True)
    work = Path(args.out or tempfile.mkdtemp(prefix="llmscale-gpu-check-"))
    os.environ.setdefault("LLMSCALE_CACHE", str(work / "cache"))
    device = "cuda:0" if kind == "cuda" else "cpu"
    quick = args.quick or kind == "cpu"
    sizes = [256, 512] if quick else [256, 512, 1024, 2048]
    tokens = 200_000 if kind == "cpu" else (1_000_000 if quick else 4_000_000)
    t0 = time.perf_counter()
    for name, fn in (("cudnn_lstm", lambda: check_cudnn_lstm(device)),
                     ("bf16_train", lambda: check_bf16_train(device, kind, work, tokens)),
                     ("throughput", lambda: check_throughput(device, kind, work, sizes, tokens)),
                     ("ddp", lambda: check_ddp(kind, work, tokens)),
                     ("packing", lambda: check_packing(kind, work, min(tokens, 1_000_000)))):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            report(name, "FAIL", f"{type(e).__name__}: {e}")
    failed = [r for r in RESULTS if r[1] == "FAIL"]
    print(f"{len(RESULTS) - len(failed)} passed or skipped, {len(failed)} failed in "
          f"{time.perf_counter() - t0:.0f} s; work dir {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
