"""LargeLanguageModel: Embedding -> LSTM -> Linear, the founding example's model.

    model = LargeLanguageModel(vocab_size, embedding_dim, hidden_dim, num_layers)
    logits = model(x)                      # x: LongTensor (B, T) -> logits (B, T, vocab_size)
    logits, state = model.forward_with_state(x, state)   # truncated BPTT: carry `state`

`state` is the LSTM's (h, c), each (num_layers, B, hidden_dim). Callers detach it between
segments so gradients stop at the segment boundary while the memory carries on.
"""

from __future__ import annotations

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


class LargeLanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, num_layers: int,
                 *, dropout: float = 0.0, tie_weights: bool = False, init: str = "default"):
        super().__init__()
        if tie_weights and embedding_dim != hidden_dim:
            raise ValueError(f"tie_weights needs embedding_dim == hidden_dim, got "
                             f"{embedding_dim} and {hidden_dim}")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        # nn.LSTM applies dropout between layers only; we add it on the input and output too.
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)
        if tie_weights:
            # Press & Wolf 2017: the output matrix is the embedding matrix.
            self.output.weight = self.embedding.weight
        if init == "uniform":
            # word_language_model's init: small uniform embeddings and output, zero output bias.
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            if not tie_weights:
                nn.init.uniform_(self.output.weight, -0.1, 0.1)
            nn.init.zeros_(self.output.bias)
        elif init != "default":
            raise ValueError(f"init must be 'default' or 'uniform', got {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.forward_with_state(x, None)
        return logits

    def forward_with_state(self, x: torch.Tensor, state: LSTMState | None
                           ) -> tuple[torch.Tensor, LSTMState]:
        emb = self.drop(self.embedding(x))  # (B, T, e)
        out, state = self.lstm(emb, state)  # (B, T, h)
        return self.output(self.drop(out)), state  # (B, T, V)

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> LSTMState:
        shape = (self.num_layers, batch_size, self.hidden_dim)
        return (torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype))


def build_model(cfg) -> LargeLanguageModel:
    """The model a RunConfig describes."""
    m = cfg.model
    return LargeLanguageModel(cfg.vocab_size, m.embedding_dim, m.hidden_dim, m.num_layers,
                              dropout=m.dropout, tie_weights=m.tie_weights, init=m.init)
