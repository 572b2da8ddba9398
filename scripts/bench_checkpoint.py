"""What the checkpoint guarantee costs: bytes on disk and seconds to write and read one.

    .venv/bin/python scripts/bench_checkpoint.py [--vocab 10000 --embedding 300 --hidden 500
                                                  --layers 10 --reps 5 --dir /tmp]

Builds the model (default: configs/seed_example.yaml's), takes one AdamW step so the
optimizer holds its moments, then times, interleaved `--reps` times:

- baseline: the two files written as llmscale wrote them before step directories, each through
  llmscale.atomic (temp file, fsync, rename), and read back with `load_file` + `torch.load`;
- llmscale.checkpoint.save_checkpoint / load_checkpoint: the step directory, its sha256
  manifest and the fsyncs; the read checks the manifest and the pair.

It prints the sizes per parameter and the medians. Timings on a shared machine are noisy:
compare the two columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmscale.atomic import atomic_path
from llmscale.checkpoint import kept_bytes, load_checkpoint, model_tensors, save_checkpoint
from llmscale.model import LargeLanguageModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--embedding", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: the temp directory)")
    a = ap.parse_args()

    torch.manual_seed(0)
    model = LargeLanguageModel(a.vocab, a.embedding, a.hidden, a.layers)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randint(0, a.vocab, (2, 8))).sum().backward()
    opt.step()
    n = sum(p.numel() for p in model.parameters())
    root = Path(tempfile.mkdtemp(dir=a.dir, prefix="bench-checkpoint-"))
    times: dict[str, list[float]] = {k: [] for k in ("save0", "save", "load0", "load")}

    def timed(key, fn):
        t = time.perf_counter()
        fn()
        times[key].append(time.perf_counter() - t)

    try:
        base = root / "baseline"
        base.mkdir()
        for step in range(1, a.reps + 1):
            state = {"run_id": "bench", "step": step, "optimizer": opt.state_dict(),
                     "rng": torch.get_rng_state()}

            def save_baseline(state=state):
                with atomic_path(base / "weights.safetensors") as tmp:
                    save_file(model_tensors(model), str(tmp),
                              metadata={"run_id": "bench", "step": str(state["step"])})
                with atomic_path(base / "trainer_state.pt") as tmp:
                    torch.save(state, tmp)

            def load_baseline():
                load_file(str(base / "weights.safetensors"))
                torch.load(base / "trainer_state.pt", map_location="cpu", weights_only=True)

            timed("save0", save_baseline)
            timed("save", lambda state=state: save_checkpoint(root / "run", model, state))
            timed("load0", load_baseline)
            timed("load", lambda: load_checkpoint(root / "run", "bench"))
        w = (base / "weights.safetensors").stat().st_size
        s = (base / "trainer_state.pt").stat().st_size
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"model: vocab {a.vocab}, embedding {a.embedding}, hidden {a.hidden}, "
              f"{a.layers} layers: {n:,} parameters")
        print(f"one checkpoint: weights {w:,} B ({w / n:.2f} B/param) + trainer state {s:,} B "
              f"({s / n:.2f} B/param) = {(w + s) / n:.2f} B/param; kept with "
              f"output.keep_checkpoints 2: {kept_bytes(root / 'run'):,} B")
        print(f"save: baseline {med['save0']:.2f} s, step directory {med['save']:.2f} s "
              f"(x{med['save'] / med['save0']:.2f})")
        print(f"load: baseline {med['load0']:.2f} s, checked {med['load']:.2f} s "
              f"(x{med['load'] / med['load0']:.2f})   (medians of {a.reps}, interleaved)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
