"""The token cache: one directory per fingerprint, written once, trusted only when complete.

    <cache>/tokens/<fingerprint>/tokenizer.json   the tokenizer (atomic write)
                                 train.bin         raw token ids, uint16 or uint32 (atomic write)
                                 val.bin
                                 meta.json         written LAST: counts, bytes, dtype, fingerprints
    <cache>/tokens/<fingerprint>.lock              filelock: one process builds, others wait

A directory without meta.json, or whose files disagree with it, is rebuilt, never read: an
interrupted encode leaves at most temp files and a tokenizer.json (complete by construction).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from llmscale.atomic import atomic_path
from llmscale.errors import UserError

CACHE_VERSION = 1
META = "meta.json"
TOKENIZER = "tokenizer.json"


def cache_root(configured: str | None) -> Path:
    """data.cache_dir, else $LLMSCALE_CACHE, else ~/.cache/llmscale."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("LLMSCALE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "llmscale"


class AtomicArrayWriter:
    """Append id arrays to `path` through llmscale.atomic: the file appears, complete, when the
    `with` block ends without an error, and not at all otherwise.

        with AtomicArrayWriter(path, dtype) as w:
            w.write(ids)  # repeatedly
        w.count  # ids written
    """

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype, self.count = Path(path), np.dtype(dtype), 0
        self._stack = contextlib.ExitStack()
        self.fh = None

    def __enter__(self) -> AtomicArrayWriter:
        tmp = self._stack.enter_context(atomic_path(self.path))
        self.fh = self._stack.enter_context(open(tmp, "wb"))
        return self

    def write(self, ids: np.ndarray) -> None:
        assert ids.dtype == self.dtype
        self.fh.write(ids.tobytes())
        self.count += len(ids)

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)


def read_meta(d: Path) -> dict[str, Any] | None:
    """The metadata of a complete cache entry, or None when it is missing or inconsistent."""
    try:
        meta = json.loads((d / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION or not (d / TOKENIZER).is_file():
        return None
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        f = d / f"{split}.bin"
        if not f.is_file() or f.stat().st_size != meta[split]["tokens"] * itemsize:
            return None
    return meta


def open_tokens(d: Path, split: str, meta: dict[str, Any]) -> np.ndarray:
    n = meta[split]["tokens"]
    if n == 0:  # np.memmap cannot map an empty file
        return np.empty(0, dtype=meta["dtype"])
    return np.memmap(d / f"{split}.bin", dtype=meta["dtype"], mode="r", shape=(n,))


def check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"data.cache_dir: cannot create the token cache {str(root)!r}: "
                        f"{e.strerror}; set data.cache_dir or $LLMSCALE_CACHE to a writable "
                        f"directory") from None
