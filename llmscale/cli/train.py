"""`llmscale train CONFIG`: train the config's base run and print a short summary.

Exit 0 when the run completed, 3 when it ended otherwise (diverged, oom, failed, preempted).
Under torchrun every rank trains; only rank 0 prints.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llmscale.cli.common import add_config_args, check_inputs, load
from llmscale.config import check_device_name
from llmscale.layout import RECORD_FILE


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one run (the config's base run)")
    add_config_args(p)
    p.add_argument("--out", default=None, help="run directory (default: output.dir)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")


def _f(v: float | None, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    from llmscale.train import train_run

    cfg = load(args)
    check_device_name(args.device)
    check_inputs(cfg, [cfg])
    run_dir = Path(args.out or cfg.output.dir)
    rec = train_run(cfg, run_dir, args.device, progress=True)
    code = 0 if rec.status == "completed" else 3
    if int(os.environ.get("RANK", "0")) != 0:
        return code
    print(f"run {rec.run_id}: {rec.status}{'' if not rec.error else ' (' + rec.error + ')'}")
    print(f"  train_loss {_f(rec.train_loss)}  val_loss {_f(rec.val_loss)}  "
          f"val_bpb {_f(rec.val_bpb)}  tokens {rec.tokens:,}")
    print(f"  {_f(rec.tokens_per_s, ',.0f')} tokens/s  wall {_f(rec.wall_time_s, '.1f')} s  "
          f"mfu {_f(rec.mfu, '.3f')}  device {rec.device_name} x{rec.world_size}")
    print(f"  record: {run_dir / RECORD_FILE}")
    return code
