"""Logging set-up for the command line and for worker processes (pool workers, SLURM tasks).

llmscale's own messages (`logging.getLogger("llmscale...")`: tokenizer training, encoding,
cache hits) go to stderr at the chosen level, default INFO, with a timestamp, so a SLURM log
shows what a long wait is doing. Library noise is turned down: `datasets` logs warnings only
and draws progress bars only on a terminal; submitit's repeated warnings ("Bypassing sacct
error", every poll) are shown once.
"""

from __future__ import annotations

import logging
import os
import re
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%H:%M:%S"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the call (pytest swaps it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns; the property wins
        pass


class OnceFilter(logging.Filter):
    """Lets each message through once; digits are ignored, so 'Call #3 - ...' repeats too."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_handler: logging.Handler | None = None


def configure_logging(level: str = "info") -> None:
    """Idempotent: the llmscale logger gets one stderr handler at `level`."""
    global _handler
    log = logging.getLogger("llmscale")
    if _handler is not None:
        log.removeHandler(_handler)
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    log.addHandler(_handler)
    log.setLevel(level.upper())
    log.propagate = False
    logging.getLogger("datasets").setLevel(logging.WARNING)
    if not sys.stderr.isatty():
        # datasets reads this when it is imported; later imports (workers) inherit it.
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        if "datasets" in sys.modules:
            from datasets.utils import disable_progress_bars

            disable_progress_bars()
    if "submitit" in sys.modules:
        quiet_submitit()


def quiet_submitit() -> None:
    """Call after `import submitit` (its import re-configures its logger): repeats once."""
    log = logging.getLogger("submitit")
    if not any(isinstance(f, OnceFilter) for f in log.filters):
        log.addFilter(OnceFilter())
