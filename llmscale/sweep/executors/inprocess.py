"""The in-process executor: one run after another in this process (the default on one CPU or
one GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

from llmscale.sweep.executors.common import NOTES, SweepProgress, train_claimed
from llmscale.sweep.plan import say
from llmscale.sweep.state import PlannedRun


def run_in_process(out: Path, todo: list[PlannedRun], device: str, progress: bool) -> None:
    from llmscale.hardware import warm_up

    try:  # the process's device start-up, once, so the first run's setup_s is its own
        seconds = warm_up(device)
        if progress:
            say(f"{device} ready in {seconds:.1f} s (device warm-up)")
    except Exception as e:  # noqa: BLE001 - the runs will fail on it too, and record why
        say(f"warning: warming up {device} failed: {type(e).__name__}: {e}")
    bar = SweepProgress(todo, progress)
    try:
        for p in todo:
            rec, how = train_claimed(p, out, device, progress=progress and sys.stderr.isatty())
            bar.done(p, rec, NOTES[how])
            if rec is not None and rec.status == "preempted":
                # SIGTERM/SIGINT reached train_run, which checkpointed: the job is being stopped,
                # so stop here too rather than start the next run.
                say(f"sweep stopped: {p.run_dir.name} was preempted and checkpointed; "
                    f"run the same command again to resume")
                break
    finally:
        bar.close()

