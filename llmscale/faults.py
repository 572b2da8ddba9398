"""Fault injection for the multi-file writes: SIGKILL this process at a named point.

    LLMSCALE_TEST_KILL_AT=<point>       kill the first time this process reaches <point>
    LLMSCALE_TEST_KILL_AT=<point>@<n>   kill the n-th time (n >= 1)

Only the save paths call `point` (llmscale.checkpoint.save_checkpoint and the token cache's
build, llmscale.data._build), between the steps of their write sequence, so a test can stop
a real `llmscale train` exactly there, as an OOM kill or a node failure would, and then show
that a rerun resumes exactly (tests/test_faults.py). SIGKILL, not an exception: no handler,
`finally` or atexit runs, which is the point.

Unset, as it always is outside those tests, `point` is one environment lookup. A name that is
not in POINTS is an error, so a misspelt test cannot pass by never killing anything.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "LLMSCALE_TEST_KILL_AT"

# In the order each write reaches them.
CHECKPOINT_POINTS = (
    "ckpt-start",  # step-<N>.tmp/ made, no file in it yet
    "ckpt-weights",  # weights.safetensors written and fsynced
    "ckpt-state",  # trainer_state.pt written and fsynced
    "ckpt-rename",  # manifest.json written, the directory fsynced: just before the rename
    "ckpt-renamed",  # step-<N>/ in place; the oldest checkpoints not yet pruned
)
CACHE_POINTS = (
    "cache-start",  # <fingerprint>.tmp/ made, no file written yet
    "cache-tokenizer",  # tokenizer.json written
    "cache-train",  # train.bin written
    "cache-val",  # val.bin written
    "cache-rename",  # meta.json written, the directory fsynced: just before the rename
    "cache-renamed",  # <fingerprint>/ in place
)
POINTS = CHECKPOINT_POINTS + CACHE_POINTS

# How often this process has reached each point: the hook counts per process by design
# (`@n` means the n-th save of this process), and only while the variable is set.
_reached: Counter[str] = Counter()


def point(name: str) -> None:
    """SIGKILL this process if LLMSCALE_TEST_KILL_AT names this point (and this occurrence)."""
    assert name in POINTS, name
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, _, nth = spec.partition("@")
    if want not in POINTS or (nth and not (nth.isdigit() and int(nth) >= 1)):
        raise RuntimeError(f"{ENV}={spec!r}: expected <point>[@<n>], point one of "
                           f"{', '.join(POINTS)}")
    if want != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
