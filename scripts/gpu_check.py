#!/usr/bin/env python
"""Check llmscale's CUDA paths on this machine and measure them, in one go (~8 minutes on GPU).

    python scripts/gpu_check.py [--out DIR] [--quick]
    python scripts/gpu_check.py --allow-cpu --quick     # the same checks on CPU (gloo, fp32)

Checks, each PASS / FAIL / SKIP with its figures (docs/gpu.md says what each one covers):
  1. precision    `train.precision: auto` resolves from the GPU's capability (bf16 where the GPU
                  has bf16 tensor cores, else fp16 + GradScaler); the peak table knows the GPU
  2. cudnn_lstm   the LSTM forward runs cuDNN kernels under bf16 autocast and matches fp32 on CPU
  3. bf16_train   a real `llmscale train` with the resolved precision completes and learns
  4. throughput   issue 16's table: hidden 512/1024/2048/4096, 2 layers, batch 64 x 128, vocab
                  16k: tok/s, TFLOP/s, MFU against the peak table and against a bf16 matmul
                  measured here; then the record's tokens_per_s against a bare loop
  5. packing      k = 1, 2, 4, 8 runs of hidden 256 sharing one GPU (`--runs-per-device k`):
                  aggregate tok/s, and each run's loss against the same run alone
  6. oom          a forced out-of-memory run records `oom` with a clear message; the next run in
                  the same process completes and its peak memory is its own
  7. pinning      a pool sweep over every GPU: each worker sees one GPU (CUDA_VISIBLE_DEVICES)
                  and records its own device name
  8. ddp          `llmscale train` under torchrun over every GPU (NCCL) against one GPU with the
                  same global batch: equal loss within bf16 tolerance; the speed-up
Everything printed is also written to DIR/gpu_check.json and DIR/gpu_check.md (tables ready for
docs/gpu.md). Exit code 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import json
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

from llmscale import hardware as hw  # noqa: E402
from llmscale.config import load_config  # noqa: E402
from llmscale.records import read_record_json  # noqa: E402

RESULTS: list[tuple[str, str, str]] = []
TABLES: dict[str, list[dict]] = {}
LINES: list[str] = []


def say(line: str = "") -> None:
    LINES.append(line)
    print(line, flush=True)


def report(name: str, status: str, detail: str) -> None:
    RESULTS.append((name, status, detail))
    say(f"[{status:4s}] {name}: {detail}")


def base_overrides(kind: str) -> list[str]:
    # The synthetic language with a 4k BPE: no download, and the data is ready in seconds.
    return ["data.source=synthetic", "tokenizer.kind=bpe", "tokenizer.vocab_size=4096",
            "train.batch_size=64", "train.seq_len=128", "eval.tokens=65536",
            f"train.precision={'auto' if kind == 'cuda' else 'fp32'}"]


def check_precision(device: str) -> None:
    if not device.startswith("cuda"):
        report("precision", "SKIP", "no CUDA device")
        return
    dev = torch.device(device)
    name, cap = torch.cuda.get_device_name(dev), torch.cuda.get_device_capability(dev)
    resolved = hw.resolve_precision("auto", dev)
    expected = "bf16" if cap >= (8, 0) else "fp16"
    peak, source = hw.peak_flops(dev, resolved)
    ok = resolved == expected and peak is not None
    report("precision", "PASS" if ok else "FAIL",
           f"{name} sm_{cap[0]}{cap[1]}: auto -> {resolved} (expected {expected}); peak "
           f"{(peak or 0) / 1e12:.1f} TFLOP/s ({source})")


def check_cudnn_lstm(device: str) -> None:
    from llmscale.model import LargeLanguageModel

    if not device.startswith("cuda"):
        report("cudnn_lstm", "SKIP", "no CUDA device")
        return
    torch.manual_seed(0)
    model = LargeLanguageModel(4096, 512, 512, 2)
    x = torch.randint(0, 4096, (16, 64))
    precision = hw.resolve_precision("auto", torch.device(device))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.no_grad():
        ref = model(x)
        model = model.to(device)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            with torch.autocast("cuda", dtype=dtype):
                out = model(x.to(device))
            torch.cuda.synchronize()
    names = {e.name for e in prof.key_averages()}
    rnn = sorted(n for n in names if any(k in n.lower() for k in ("cudnn", "rnn", "lstm")))
    err = ((out.float().cpu() - ref).abs().max() / ref.abs().max()).item()
    ok = torch.backends.cudnn.enabled and bool(rnn) and err < 5e-2
    report("cudnn_lstm", "PASS" if ok else "FAIL",
           f"cudnn {torch.backends.cudnn.version()}, kernels {rnn[:3]}, {precision} vs fp32 max "
           f"rel diff {err:.2e}, output dtype {out.dtype}")


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
           f"status {rec.status} {rec.error or ''}, val_loss {rec.val_loss} (uniform "
           f"{math.log(4096):.2f}), {rec.tokens_per_s or 0:,.0f} tok/s, mfu {rec.mfu} of "
           f"{rec.peak_flops} FLOP/s ({rec.peak_flops_source}); time split setup "
           f"{rec.setup_s} / train {rec.train_time_s} / eval {rec.eval_time_s} / ckpt "
           f"{rec.checkpoint_time_s} s; peak memory {rec.peak_memory_bytes} allocated, "
           f"{rec.peak_memory_reserved_bytes} reserved")


def measured_matmul_peak(device: torch.device, precision: str) -> float:
    """Best of several timed bf16 (fp16, fp32) matmuls at 8192^3 on this GPU (CPU: the cached
    oneDNN figure)."""
    if device.type != "cuda":
        return hw.cpu_peak()[0] or math.nan
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize(device)
        best = max(best, 10 * 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def check_throughput(device: str, kind: str, sizes: list[int], steps: int) -> None:
    """Issue 16's table: the real train_step loop (as bench train) per hidden size."""
    from llmscale.accounting import flops_per_token, param_counts
    from llmscale.bench import train as bench

    dev = torch.device(device)
    precision = hw.resolve_precision("auto", dev)
    vocab, batch, seq_len = (16384, 64, 128) if kind == "cuda" else (4096, 16, 64)
    table_peak, source = hw.peak_flops(dev, precision)
    meas_peak = measured_matmul_peak(dev, precision)
    say(f"peak: table {(table_peak or math.nan) / 1e12:.1f} TFLOP/s ({source}); measured "
        f"{precision} matmul {meas_peak / 1e12:.1f} TFLOP/s")
    say("| hidden | params_nonemb | tok/s | TFLOP/s | MFU (table) | MFU (measured) |")
    say("| ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for h in sizes:
        cfg = load_config(None, [f"tokenizer.vocab_size={vocab}", f"model.hidden_dim={h}",
                                 f"model.embedding_dim={h}", "model.num_layers=2",
                                 f"train.batch_size={batch}", f"train.seq_len={seq_len}",
                                 f"train.precision={precision}"])
        fpt = flops_per_token(vocab, cfg.model, seq_len)
        batches = bench._batches(vocab, batch, seq_len, steps + 2, dev)
        secs = min(bench._time_real(cfg, batches, dev) for _ in range(2))
        tps = steps * batch * seq_len / secs
        n = param_counts(vocab, cfg.model).nonembedding
        row = {"hidden": h, "params_nonembedding": n, "tokens_per_s": tps,
               "tflops": fpt * tps / 1e12, "mfu_table": fpt * tps / table_peak
               if table_peak else None, "mfu_measured": fpt * tps / meas_peak}
        rows.append(row)
        say(f"| {h} | {n:,} | {tps:,.0f} | {row['tflops']:.2f} | "
            f"{row['mfu_table'] or math.nan:.3f} | {row['mfu_measured']:.3f} |")
    TABLES["throughput"] = rows
    rec_rows = bench.record_vs_bare(kind == "cpu", device, hidden=512,
                                    batch=64 if kind == "cuda" else 32,
                                    tokens=None if kind == "cpu" else 64 * 128 * 200)
    TABLES["record_vs_bare"] = rec_rows
    say("| record tok/s | bare tok/s | record/bare | wall s | setup s | train s | eval s | mfu |")
    say("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rec_rows:
        say(f"| {r['record_tokens_per_s']:,.0f} | {r['bare_tokens_per_s']:,.0f} | "
            f"{r['ratio']:.3f} | {r['wall_time_s']:.1f} | {r['setup_s']:.1f} | "
            f"{r['train_time_s']:.1f} | {r['eval_time_s']:.1f} | {r['mfu']:.3f} |")
    ratio = max(r["ratio"] for r in rec_rows)
    report("throughput", "PASS" if ratio >= 1.0 else "FAIL",
           f"{len(sizes)} sizes (table above); record/bare {ratio:.3f} (target >= 1.0)")


def check_packing(kind: str, work: Path, tokens: int) -> None:
    from llmscale.sweep import run_sweep

    ks = (1, 2, 4, 8) if kind == "cuda" else (1, 2)
    n_runs = max(ks)
    sets = base_overrides(kind) + ["model.hidden_dim=256", "model.embedding_dim=256",
                                   f"train.tokens={tokens}", "eval.tokens=8192",
                                   f"sweep.seeds={list(range(n_runs))}",
                                   "name=gpu_check_packing"]
    cfg = load_config(None, sets)
    device = "cuda:0" if kind == "cuda" else "cpu"
    say("| runs per GPU | wall s | aggregate tok/s | max rel loss diff vs alone |")
    say("| ---: | ---: | ---: | ---: |")
    alone: dict[str, float] = {}
    rows = []
    for k in ks:
        t0 = time.perf_counter()
        records = run_sweep(cfg, work / f"pack{k}", devices=device, runs_per_device=k,
                            progress=False)
        wall = time.perf_counter() - t0
        if not all(r.status == "completed" for r in records) or len(records) != n_runs:
            report("packing", "FAIL", f"{k} per device: {[(r.status, r.error) for r in records]}")
            return
        if k == 1:
            alone = {r.run_id: r.val_loss for r in records}
        diff = max(abs(r.val_loss - alone[r.run_id]) / alone[r.run_id] for r in records)
        agg = sum(r.tokens for r in records) / wall
        rows.append({"k": k, "wall_s": wall, "aggregate_tokens_per_s": agg,
                     "max_rel_loss_diff": diff})
        say(f"| {k} | {wall:.1f} | {agg:,.0f} | {diff:.1e} |")
    TABLES["packing"] = rows
    ok = all(r["max_rel_loss_diff"] < 2e-2 for r in rows)
    gain = rows[-1]["aggregate_tokens_per_s"] / rows[0]["aggregate_tokens_per_s"]
    report("packing", "PASS" if ok else "FAIL",
           f"{n_runs} runs at k = {ks}: x{gain:.2f} aggregate at k={ks[-1]}")


def check_oom(device: str, kind: str, work: Path) -> None:
    """A forced OOM, then a small run in the same process: `oom`, and the small run's peak is
    its own (the peak statistics were reset)."""
    from llmscale.train import train_run

    huge = (["train.batch_size=65536", "model.hidden_dim=4096", "model.embedding_dim=4096",
             "tokenizer.vocab_size=4096"] if kind == "cuda" else ["model.hidden_dim=200000"])
    small = ["model.hidden_dim=64", "model.embedding_dim=64"]
    base = base_overrides(kind) + ["train.tokens=262144", "eval.tokens=8192"]
    big = train_run(load_config(None, base + huge), work / "oom_big", device, progress=False)
    nxt = train_run(load_config(None, base + small), work / "oom_next", device, progress=False)
    # On CUDA the huge batch allocates most of the GPU before it fails, so the next run's peak
    # must be far below it. On CPU the allocation is refused outright (nothing taken), so only
    # the status and the message are checked and the figures printed.
    own_peak = kind == "cpu" or (nxt.peak_memory_bytes or 0) < (big.peak_memory_bytes or 0)
    ok = (big.status == "oom" and "out of memory" in (big.error or "")
          and nxt.status == "completed" and own_peak)
    report("oom", "PASS" if ok else "FAIL",
           f"forced: {big.status}: {big.error}; next run {nxt.status}, peak "
           f"{nxt.peak_memory_bytes} vs the OOM run's {big.peak_memory_bytes} bytes")


def check_pinning(kind: str, work: Path) -> None:
    from llmscale.sweep import run_sweep

    n = torch.cuda.device_count() if kind == "cuda" else 0
    if n < 2:
        report("pinning", "SKIP", f"{n} GPU(s): one worker per GPU needs two or more")
        return
    sets = base_overrides(kind) + ["train.tokens=262144", "eval.tokens=8192",
                                   f"sweep.seeds={list(range(2 * n))}", "name=gpu_check_pin"]
    records = run_sweep(load_config(None, sets), work / "pin",
                        devices=",".join(f"cuda:{i}" for i in range(n)), progress=False)
    names = {r.device_name for r in records}
    ok = all(r.status == "completed" and r.gpu_count == 1 for r in records)
    report("pinning", "PASS" if ok else "FAIL",
           f"{len(records)} runs over {n} workers; device names {sorted(names)}; check "
           f"nvidia-smi during the run shows one process per GPU")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and tokens")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU when there is no GPU")
    ap.add_argument("--only", default=None,
                    help="comma-separated checks to run (default: all), e.g. throughput,oom")
    args = ap.parse_args()
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu" and not args.allow_cpu:
        print("no CUDA device: run on a GPU machine, or pass --allow-cpu", file=sys.stderr)
        return 2
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    say(f"torch {torch.__version__}, CUDA {torch.version.cuda}, devices {names or ['cpu']}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    work = Path(args.out or tempfile.mkdtemp(prefix="llmscale-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LLMSCALE_CACHE", str(work / "cache"))
    device = "cuda:0" if kind == "cuda" else "cpu"
    quick = args.quick or kind == "cpu"
    sizes = [64, 128] if kind == "cpu" else ([512, 1024] if quick else [512, 1024, 2048, 4096])
    tokens = 200_000 if kind == "cpu" else (1_000_000 if quick else 4_000_000)
    t0 = time.perf_counter()
    checks = (("precision", lambda: check_precision(device)),
              ("cudnn_lstm", lambda: check_cudnn_lstm(device)),
              ("bf16_train", lambda: check_bf16_train(device, kind, work, tokens)),
              ("throughput", lambda: check_throughput(device, kind, sizes, 5 if quick else 20)),
              ("packing", lambda: check_packing(kind, work, min(tokens, 1_000_000))),
              ("oom", lambda: check_oom(device, kind, work)),
              ("pinning", lambda: check_pinning(kind, work)),
              ("ddp", lambda: check_ddp(kind, work, tokens)))
    only = set(args.only.split(",")) if args.only else {name for name, _ in checks}
    unknown = only - {name for name, _ in checks}
    if unknown:
        print(f"--only: unknown check(s) {sorted(unknown)}; allowed: "
              f"{', '.join(name for name, _ in checks)}", file=sys.stderr)
        return 2
    for name, fn in checks:
        if name not in only:
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            report(name, "FAIL", f"{type(e).__name__}: {e}")
    failed = [r for r in RESULTS if r[1] == "FAIL"]
    say(f"{len(RESULTS) - len(failed)} passed or skipped, {len(failed)} failed in "
        f"{time.perf_counter() - t0:.0f} s; work dir {work}")
    (work / "gpu_check.json").write_text(json.dumps(
        {"devices": names, "torch": torch.__version__, "cuda": torch.version.cuda,
         "results": RESULTS, "tables": TABLES}, indent=2, default=str) + "\n")
    (work / "gpu_check.md").write_text("\n".join(LINES) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
