"""Run tracking: `output.report_to: [tensorboard, wandb]`, each an optional extra.

    tracker = open_tracker(cfg, run_dir, run_id, rank=rank, start_step=step)
    tracker.log(step, {"train_loss": ..., "val_loss": ..., "lr": ..., "tokens_per_s": ...,
                       "grad_norm": ...})
    tracker.close()

Only rank 0 reports (other ranks get a tracker that does nothing). Runs are grouped by the
sweep's name: TensorBoard by directory (point it at DIR/runs: each run's events are in
RUN/tb/), W&B by `group`. The resolved config is attached (TensorBoard: a text summary; W&B:
the run config). A resumed run continues its curves: TensorBoard discards events past the
checkpoint's step (`purge_step`), W&B resumes the run of the same id. W&B runs offline when
there is no network (or WANDB_MODE says so); `wandb sync` uploads them later.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from llmscale import layout
from llmscale.config import RunConfig, dump_yaml
from llmscale.errors import UserError

log = logging.getLogger(__name__)

# The module each tracker needs, and the extra that installs it.
_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb"}
# Metrics-row key -> the tracker's tag. Rows are those of metrics.csv (llmscale.train).
TAGS = {"train_loss": "train/loss", "val_loss": "val/loss", "lr": "train/lr",
        "tokens_per_s": "train/tokens_per_s", "grad_norm": "train/grad_norm",
        "tokens": "train/tokens"}


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def check_trackers(names: Sequence[str]) -> None:
    """Each tracker in `names` (checked against TRACKERS by the config) is installed; else one
    UserError line naming the extra to install."""
    for name in names:
        if importlib.util.find_spec(_MODULES[name]) is None:
            raise UserError(f"output.report_to: {name} is not installed; "
                            f"pip install 'llmscale[{name}]'")


def _metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The tracked scalars of a metrics row (absent or None ones left out)."""
    return {TAGS[k]: float(v) for k, v in metrics.items() if k in TAGS and v is not None}


class _Trackers:
    """Every tracker the config asks for (none: log and close do nothing)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(step, metrics)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        self.trackers = []


class TensorBoard:
    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops events a killed process wrote past its checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir / layout.TB_DIR),
                                    purge_step=start_step if start_step > 0 else None)
        if start_step == 0:
            config = "\n".join("    " + line for line in dump_yaml(cfg).splitlines())
            self.writer.add_text("config", f"run {run_id} of sweep {cfg.name}\n\n{config}", 0)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for tag, value in _metrics(metrics).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a killed run keeps its curve up to the last logging step

    def close(self) -> None:
        self.writer.close()


def _online(host: str = "api.wandb.ai", port: int = 443, timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


class WandB:
    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str, start_step: int):
        import wandb

        mode = os.environ.get("WANDB_MODE")
        if mode is None:
            # online needs the network and credentials; never prompt (a batch job would hang)
            online = _online() and wandb.login(prompt=False, verify=False)
            mode = "online" if online else "offline"
            if not online:
                log.info("wandb: no network or no credentials; logging offline under %s "
                         "(`wandb sync` uploads it later)", run_dir / layout.WANDB_DIR)
        (run_dir / layout.WANDB_DIR).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "llmscale"),
                              group=cfg.name, name=run_dir.name, id=run_id, resume="allow",
                              config=cfg.to_dict(), dir=str(run_dir), mode=mode,
                              reinit="create_new", settings=wandb.Settings(console="off"))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log(_metrics(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": TensorBoard, "wandb": WandB}


def open_tracker(cfg: RunConfig, run_dir: str | Path, run_id: str, *, rank: int = 0,
                 start_step: int = 0) -> Tracker:
    """The trackers of `cfg.output.report_to` for one run (nothing on ranks other than 0)."""
    names = cfg.output.report_to
    if rank != 0 or not names:
        return _Trackers([])
    check_trackers(names)
    return _Trackers([_CLASSES[n](cfg, Path(run_dir), run_id, start_step) for n in names])
