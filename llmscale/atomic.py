"""Atomic file writes: every file llmscale writes goes through `atomic_write`, so a crash or a
full disk mid-write leaves the previous version (or nothing), never a torn file.

The temp file is created by `mkstemp` (mode 0600); before the rename it gets the mode a plain
`open()` would have given (0666 minus the umask), so a sweep on a shared cluster stays readable
by the group, as files written any other way would be.
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
