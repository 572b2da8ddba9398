"""Contiguous token streams for truncated BPTT, as in word_language_model's batchify.

The token array (after an epoch's offset) is cut into R = batch_size * world_size rows of L
tokens; rank r owns rows [r*B, (r+1)*B). With B = 2 rows per rank, 2 ranks and T = seq_len:

    tokens  a b c d e f g h | i j k l m n o p | q r s t u v w x | ...
    rows    rank 0: row 0 = a b c d e f g h     rank 1: row 2 = q r s t u v w x
                    row 1 = i j k l m n o p             row 3 = ...
    step 0  x = columns [0, T) of my rows, y = columns [1, T+1)
    step 1  x = columns [T, 2T), ...

Row b of step i+1 continues row b of step i, so the LSTM state carries across steps (detach it
between steps: that is what "truncated" means). A step's (B, T+1) window is a strided view of
the memmap (`TokenStream.window`); the trainer copies it once, into its own buffer.
"""

from __future__ import annotations

import numpy as np
import torch

from llmscale.errors import UserError


class TokenStream:
    """word_language_model's batchify: the token array is cut into `batch_size * world_size`
    contiguous rows; rank r owns rows [r*batch_size, (r+1)*batch_size). Step i returns columns
    [i*seq_len, (i+1)*seq_len) of this rank's rows as inputs and the same shifted by one as
    targets, so the LSTM state carries from one step to the next. Ranks never overlap."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, *,
                 rank: int = 0, world_size: int = 1, seed: int = 0, shuffle_epochs: bool = True,
                 split: str = "token"):
        assert tokens.ndim == 1
        assert 0 <= rank < world_size, (rank, world_size)
        assert batch_size >= 1 and seq_len >= 1
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_epochs = shuffle_epochs
        rows = batch_size * world_size
        # Shuffled epochs start at an offset in [0, seq_len], so keep seq_len tokens of slack.
        reserve = seq_len if shuffle_epochs else 0
        n = len(tokens)
        self.row_len = (n - 1 - reserve) // rows  # tokens per row, excluding the +1 target
        self.steps_per_epoch = max(0, self.row_len // seq_len)
        if self.steps_per_epoch < 1:
            need = rows * seq_len + 1 + reserve
            raise UserError(
                f"the {split} split has {n} tokens, fewer than one batch needs: batch_size "
                f"{batch_size} x world_size {world_size} x seq_len {seq_len} + 1"
                f"{f' + {reserve} (epoch offset)' if reserve else ''} = {need}; lower "
                f"eval.batch_size / train.batch_size / train.seq_len or give more data")
        self._slack = n - 1 - rows * self.row_len  # >= reserve

    def offset(self, epoch: int) -> int:
        """Where epoch `epoch`'s rows start: 0 without shuffling, else seeded by (seed, epoch)."""
        if not self.shuffle_epochs:
            return 0
        rng = np.random.default_rng([self.seed, epoch, 0xBA7C])
        return int(rng.integers(0, self._slack + 1))

    def window(self, step: int) -> tuple[np.ndarray, bool]:
        """(window, reset): the (batch_size, seq_len + 1) token ids of step `step` as a
        read-only strided *view* of `tokens` (no copy: row b starts row_len tokens after row
        b-1); inputs are window[:, :-1], targets window[:, 1:]. reset is True when the carried
        state must be zeroed before this batch (the first step of each epoch).
        Deterministic in (seed, step), so training resumes from a step number. Past the end of
        the data it wraps to a new epoch; with shuffle_epochs each epoch starts the rows at a
        different seeded offset."""
        assert step >= 0
        epoch, i = divmod(step, self.steps_per_epoch)
        start = self.offset(epoch) + self.rank * self.batch_size * self.row_len + i * self.seq_len
        itemsize = self.tokens.strides[0]
        window = np.lib.stride_tricks.as_strided(
            self.tokens[start:], shape=(self.batch_size, self.seq_len + 1),
            strides=(self.row_len * itemsize, itemsize), writeable=False)
        return window, i == 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(x, y, reset) as int64 tensors (batch_size, seq_len): `window` copied once. The
        trainer copies windows into its own reusable (pinned, on CUDA) buffer instead."""
        window, reset = self.window(step)
        buf = torch.from_numpy(window.astype(np.int64))  # the one copy
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous(), reset

    def __len__(self) -> int:
        return self.steps_per_epoch
