"""What every executor shares: a run's picklable payload, training one run under its claim, and
the sweep-level progress bar."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from filelock import Timeout

from llmscale import layout
from llmscale.config import from_dict
from llmscale.records import RunRecord, upsert_record
from llmscale.sweep.plan import SweepPoint, say
from llmscale.sweep.state import PlannedRun, claim_lock, planned_run, read_disk_record, table_record


def payload(p: PlannedRun) -> dict[str, Any]:
    """What a worker process needs to rebuild the PlannedRun (plain, picklable data)."""
    return {"cfg": p.cfg.to_dict(), "point": p.point.point, "flops_budget": p.point.flops_budget}


def from_payload(out: Path, data: dict[str, Any]) -> PlannedRun:
    return planned_run(out, SweepPoint(cfg=from_dict(data["cfg"]), point=data["point"],
                                       flops_budget=data["flops_budget"]))


def train_claimed(p: PlannedRun, out: Path, device: str,
                  progress: bool) -> tuple[RunRecord | None, str]:
    """Train one run unless another process holds it; upsert its record.

    Returns (record, how): how is "trained", "claimed" (another process holds the run: skipped,
    record None) or "done" (another process finished it after this sweep looked: not retrained).
    """
    results = layout.results_path(out)
    p.claim_path.parent.mkdir(parents=True, exist_ok=True)
    lock = claim_lock(p.claim_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None, "claimed"
    try:
        done = read_disk_record(p.run_dir, p.run_id, say)
        if done is not None and done.status == "completed":
            done = table_record(done, p, out)
            upsert_record(results, done)
            return done, "done"
        from llmscale.train import train_run

        rec = train_run(p.cfg, p.run_dir, device=device, progress=progress,
                        sweep_point=p.point.point or None, flops_budget=p.point.flops_budget)
        rec = table_record(rec, p, out)
        upsert_record(results, rec)
        return rec, "trained"
    finally:
        lock.release()


NOTES = {"trained": "", "claimed": " (claimed by another process)",
         "done": " (finished by another process: not retrained)"}


class SweepProgress:
    """Sweep-level bar: tokens done (so the ETA weighs big runs), runs done in the postfix.
    Off a terminal, one line per finished run instead."""

    def __init__(self, todo: list[PlannedRun], enabled: bool):
        from tqdm import tqdm

        self.n = len(todo)
        self.k = 0
        self.t0 = time.perf_counter()
        self.total_tokens = sum(p.accounting.tokens for p in todo)
        self.tokens = 0
        self.bar = tqdm(total=self.total_tokens, unit="tok", unit_scale=True, desc="sweep",
                        disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True)
        self.bar.set_postfix_str(f"runs 0/{self.n}")

    def done(self, p: PlannedRun, rec: RunRecord | None, note: str = "") -> None:
        self.k += 1
        self.tokens += p.accounting.tokens
        self.bar.update(p.accounting.tokens)
        self.bar.set_postfix_str(f"runs {self.k}/{self.n}")
        if self.bar.disable:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.tokens * (self.total_tokens - self.tokens) if self.tokens else 0.0
            status = rec.status if rec is not None else "skipped"
            say(f"[{self.k}/{self.n}] {p.run_dir.name}: {status}{note} | "
                f"{self.tokens:,}/{self.total_tokens:,} tokens, ETA {eta:.0f}s")

    def close(self) -> None:
        self.bar.close()

