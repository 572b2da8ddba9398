"""Loss by token position (Kaplan et al. 2020, Figure 20): how much a model gains from context.

`position_loss(model, val_tokens, context=512)` cuts the validation tokens into windows of
`context + 1` tokens and scores every window as a *fresh stream*: the RNNs start from a zero
state at the window's first token (the state is carried across the window, read `chunk`
tokens at a time, exactly as training reads), the transformer sees the window as its context
from position 0. Position p (1..context) is the loss of predicting token p + 1 of a window
from its first p tokens, averaged over windows: for the RNNs it is the distance from the last
state reset, for the transformer the position in its context. So p = 1 is a unigram-ish guess
and the curve's flattening shows how far back a model uses its context.

For the transformer, positions past its training window (`train.seq_len`) are extrapolation
of the rotary positions it never saw in training; the RNNs were trained on carried state, so
any position is in-distribution for them.

`write_position_loss` writes the curve as `position_loss.csv` (layout.POSITION_LOSS_FILE)
with two columns, `position,loss` (nats per token), through the one atomic write.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llmscale.atomic import atomic_write_text
from llmscale.layout import POSITION_LOSS_FILE

MIN_CONTEXT = 512  # issue 17: at least this many positions for every kind
COLUMNS = ("position", "loss")


@torch.no_grad()
def position_loss(model: torch.nn.Module, val_tokens: torch.Tensor | np.ndarray | Sequence[int],
                  context: int = MIN_CONTEXT, *, batch_size: int = 32,
                  chunk: int | None = None, max_windows: int | None = None,
                  autocast: contextlib.AbstractContextManager | None = None
                  ) -> list[tuple[int, float]]:
    """Mean loss (nats/token) at each position 1..context over fresh windows of `val_tokens`.

    `model` has the llmscale.model interface (forward_with_state). The RNNs read each window
    `chunk` tokens at a time with the state carried (default: the whole window at once; the
    result is the same up to float rounding); the transformer always reads it whole.
    `max_windows` caps the windows scored (None: as many as fit). Runs on the device of
    `val_tokens` (a tensor) or of the model; `autocast`, if given, wraps the forwards.
    """
    if context < 1:
        raise ValueError(f"context must be >= 1 token, got {context}")
    device = (val_tokens.device if isinstance(val_tokens, torch.Tensor)
              else next(model.parameters()).device)
    tokens = torch.as_tensor(np.asarray(val_tokens) if not isinstance(val_tokens, torch.Tensor)
                             else val_tokens).to(device=device, dtype=torch.long)
    n_windows = tokens.numel() // (context + 1)
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise ValueError(f"the validation split has {tokens.numel()} tokens: too few for one "
                         f"window of context {context} + 1")
    windows = tokens[: n_windows * (context + 1)].view(n_windows, context + 1)
    step = context if (chunk is None or not model.carries_state) else chunk
    total = torch.zeros(context, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with autocast or contextlib.nullcontext():
            for start in range(0, n_windows, batch_size):
                x = windows[start:start + batch_size, :-1]
                y = windows[start:start + batch_size, 1:]
                state = None  # a fresh stream: the state is reset at position 1
                for t in range(0, context, step):
                    logits, state = model.forward_with_state(x[:, t:t + step], state)
                    loss = F.cross_entropy(logits.float().transpose(1, 2), y[:, t:t + step],
                                           reduction="none")  # (B, step)
                    total[t:t + step] += loss.sum(dim=0, dtype=torch.float64)
    finally:
        model.train(was_training)
    means = (total / n_windows).tolist()
    return [(p + 1, loss) for p, loss in enumerate(means)]


def position_loss_text(rows: Sequence[tuple[int, float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for position, loss in rows:
        w.writerow((int(position), repr(float(loss))))
    return buf.getvalue()


def write_position_loss(run_dir: str | Path, rows: Sequence[tuple[int, float]]) -> Path:
    """Write `run_dir/position_loss.csv` atomically; returns its path."""
    path = Path(run_dir) / POSITION_LOSS_FILE
    atomic_write_text(path, position_loss_text(rows))
    return path


def read_position_loss(path: str | Path) -> list[tuple[int, float]]:
    """The (position, loss) rows of a position_loss.csv (a run dir or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / POSITION_LOSS_FILE
    with open(p, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{p}: expected columns {','.join(COLUMNS)}, got {reader.fieldnames}")
        return [(int(r["position"]), float(r["loss"])) for r in reader]
