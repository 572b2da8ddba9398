"""The token cache: one directory per fingerprint, written once as a unit, trusted only whole.

    <cache>/tokens/<fingerprint>/tokenizer.json   the tokenizer
                                 train.bin         raw token ids, uint16 or uint32
                                 val.bin
                                 meta.json         counts, bytes, dtype, fingerprints
    <cache>/tokens/<fingerprint>.tmp/              the same files while a build writes them
    <cache>/tokens/<fingerprint>.old/              an inconsistent entry being replaced
    <cache>/tokens/<fingerprint>.lock              filelock: one process builds, others wait

A build (llmscale.data._build, under the lock) writes every file into `<fingerprint>.tmp/`,
fsyncs them and the directory, and renames it to `<fingerprint>/` (`commit_entry`). So the
entry appears whole or not at all: a build killed at any point leaves the `.tmp` directory,
which no reader opens; the next build reuses its tokenizer.json (each file in it is written
atomically, so one that exists is complete) and writes the rest again. Entries written by
older versions in place (meta.json last) have the same files and are read as they are; one
without meta.json, or whose files disagree with it, is rebuilt, never read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from llmscale import faults
from llmscale.atomic import atomic_path, rename_dir, seal_dir
from llmscale.errors import UserError

CACHE_VERSION = 1
META = "meta.json"
TOKENIZER = "tokenizer.json"
BUILD_SUFFIX = ".tmp"  # <fingerprint>.tmp/: a build in progress (or cut short)
OLD_SUFFIX = ".old"  # <fingerprint>.old/: an inconsistent entry on its way out


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


def build_dir(entry: Path) -> Path:
    """Where a build writes `entry`'s files before `commit_entry` renames them into place."""
    return entry.with_name(entry.name + BUILD_SUFFIX)


def commit_entry(entry: Path) -> None:
    """Make the finished build directory `entry`: fsync its files and itself, then rename it.
    An entry already there is inconsistent (or the build would not have run): it is renamed
    out of the way first and deleted after, so no reader ever sees a mix of the two."""
    tmp = build_dir(entry)
    seal_dir(tmp)
    faults.point("cache-rename")
    old = entry.with_name(entry.name + OLD_SUFFIX)
    if entry.exists():
        if old.exists():
            shutil.rmtree(old)
        rename_dir(entry, old)
    rename_dir(tmp, entry)  # the commit: from here the entry exists, whole
    if old.exists():
        shutil.rmtree(old)
    faults.point("cache-renamed")


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
