"""Atomic file writes: every file llmscale writes goes through `atomic_write`, so a crash or a
full disk mid-write leaves the previous version (or nothing), never a torn file.

The temp file is created by `mkstemp` (mode 0600); before the rename it gets the mode a plain
`open()` would have given (0666 minus the umask), so a sweep on a shared cluster stays readable
by the group, as files written any other way would be.

Files that must change together are written as one directory (`seal_dir`, `rename_dir`):
a checkpoint (llmscale.checkpoint) and a token cache entry (llmscale.data.cache).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (one call, no thread gap
    # that matters: the value written back is the value read).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode `open(path, "w")` gives a new file under the current umask."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it, set the default mode and rename it
    over `path`. On any error the temp file is removed and `path` is untouched.

    For writers that need a file name (safetensors, torch.save, matplotlib, numpy)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, p)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(fh)` on a binary file handle, then commit it atomically to `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --- a directory as one atomic unit ---------------------------------------------------------
# For writes of several files that belong together (a checkpoint's weights and trainer state;
# a token cache entry's tokenizer, arrays and metadata): the files go into a fresh temp
# directory, everything in it is fsynced, and one rename makes the whole directory appear.
# A reader trusts only the final name, so it sees all the files or none of them.


def fsync_dir(path: str | Path) -> None:
    """fsync a directory: its entries (names created, renamed or removed in it) reach the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal_dir(path: str | Path) -> None:
    """Finish the files directly inside the directory `path` as `atomic_path` finishes one:
    the mode a plain `open()` gives (some writers, safetensors among them, create 0600), then
    fsync; then fsync the directory itself."""
    mode = default_file_mode()
    for f in sorted(Path(path).iterdir()):
        if f.is_file():
            os.chmod(f, mode)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(path)


def rename_dir(src: str | Path, dst: str | Path) -> None:
    """Rename the directory `src` to `dst` (same parent; `dst` must not exist) and fsync the
    parent, so that the rename itself survives a power loss. Renaming a finished (`seal_dir`ed)
    temp directory to its final name is the commit of a multi-file unit."""
    src, dst = Path(src), Path(dst)
    assert src.parent == dst.parent, (src, dst)
    os.rename(src, dst)  # atomic on POSIX; fails (ENOTEMPTY/EEXIST) rather than merge
    fsync_dir(dst.parent)


def remove_dir(path: str | Path, suffix: str) -> None:
    """Delete the directory `path` so that no crash leaves it half-emptied under its own name:
    rename it to `<path><suffix>` first (replacing a leftover of that name), then delete that."""
    import shutil

    path = Path(path)
    doomed = path.with_name(path.name + suffix)
    if doomed.exists():
        shutil.rmtree(doomed)
    rename_dir(path, doomed)
    shutil.rmtree(doomed)
