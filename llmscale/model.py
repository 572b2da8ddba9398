"""The language models llmscale trains, one per `model.kind`, behind one interface.

    model = LargeLanguageModel(vocab_size, embedding_dim, hidden_dim, num_layers)   # the LSTM
    logits = model(x)                      # x: LongTensor (B, T) -> logits (B, T, vocab_size)
    logits, state = model.forward_with_state(x, state)   # truncated BPTT: carry `state`

| kind          | class                      | shape                                              |
| ------------- | -------------------------- | -------------------------------------------------- |
| `lstm`        | `LargeLanguageModel`       | Embedding -> nn.LSTM -> Linear (the founding model) |
| `gru`         | `GRULanguageModel`         | Embedding -> nn.GRU -> Linear                      |
| `transformer` | `TransformerLanguageModel` | Embedding -> pre-norm decoder blocks -> LayerNorm -> Linear |

The interface the training loop uses, the same for every kind (`build_model(cfg)` picks one):

- `model(x)` -> logits; `model.forward_with_state(x, state)` -> (logits, state).
- `state` is a tuple of tensors, each (num_layers, B, hidden_dim), batch on dim 1: the LSTM's
  (h, c), the GRU's (h,), and () for the transformer, which carries nothing between windows
  (it trains on `train.seq_len` windows, each from position 0). `None` means a fresh state.
  Callers detach the state between segments so gradients stop at the segment boundary while
  the memory carries on; slicing rows, gathering ranks and saving are loops over the tuple.
- `model.init_state(B, device, dtype)` -> a fresh (zero) state; `model.carries_state` says
  whether the state is non-empty; `model.kind` is the config's `model.kind`.

The transformer uses rotary position embeddings (RoFormer, Su et al. 2021) on queries and keys:
no position parameters, so its parameter count does not depend on the context length, and the
loss-by-position evaluation (llmscale.position) can run it on contexts longer than the training
window (past `train.seq_len` that is extrapolation, and the loss there says so).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

State = tuple[torch.Tensor, ...]
LSTMState = tuple[torch.Tensor, torch.Tensor]


def _check_tie(tie_weights: bool, embedding_dim: int, hidden_dim: int) -> None:
    if tie_weights and embedding_dim != hidden_dim:
        raise ValueError(f"tie_weights needs embedding_dim == hidden_dim, got "
                         f"{embedding_dim} and {hidden_dim}")


def _uniform_init(embedding: nn.Embedding, output: nn.Linear, tie_weights: bool) -> None:
    # word_language_model's init: small uniform embeddings and output, zero output bias.
    nn.init.uniform_(embedding.weight, -0.1, 0.1)
    if not tie_weights:
        nn.init.uniform_(output.weight, -0.1, 0.1)
    nn.init.zeros_(output.bias)


class _RecurrentLM(nn.Module):
    """Embedding -> RNN -> Linear, shared by the LSTM and the GRU (which differ in the cell)."""

    kind = ""
    carries_state = True
    _rnn_class: type[nn.RNNBase] = nn.LSTM
    _rnn_attr = "lstm"  # the submodule's name: it is in the checkpoints' tensor names

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, num_layers: int,
                 *, dropout: float = 0.0, tie_weights: bool = False, init: str = "default"):
        super().__init__()
        _check_tie(tie_weights, embedding_dim, hidden_dim)
        if init not in ("default", "uniform"):
            raise ValueError(f"init must be 'default' or 'uniform', got {init!r}")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        # nn.LSTM / nn.GRU apply dropout between layers only; we add it on the input and output.
        rnn = self._rnn_class(embedding_dim, hidden_dim, num_layers, batch_first=True,
                              dropout=dropout if num_layers > 1 else 0.0)
        self.add_module(self._rnn_attr, rnn)
        self.drop = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)
        if tie_weights:
            # Press & Wolf 2017: the output matrix is the embedding matrix.
            self.output.weight = self.embedding.weight
        if init == "uniform":
            _uniform_init(self.embedding, self.output, tie_weights)

    @property
    def rnn(self) -> nn.RNNBase:
        return getattr(self, self._rnn_attr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.forward_with_state(x, None)
        return logits

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> State:
        shape = (self.num_layers, batch_size, self.hidden_dim)
        n = 2 if isinstance(self.rnn, nn.LSTM) else 1
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(n))


class LargeLanguageModel(_RecurrentLM):
    """The founding model: Embedding -> LSTM -> Linear (`model.kind: lstm`).

    State: the LSTM's (h, c), each (num_layers, B, hidden_dim).
    """

    kind = "lstm"
    _rnn_class = nn.LSTM
    _rnn_attr = "lstm"

    def forward_with_state(self, x: torch.Tensor, state: State | None
                           ) -> tuple[torch.Tensor, LSTMState]:
        emb = self.drop(self.embedding(x))  # (B, T, e)
        out, state = self.lstm(emb, None if state is None else tuple(state))  # (B, T, h)
        return self.output(self.drop(out)), state  # (B, T, V)


class GRULanguageModel(_RecurrentLM):
    """Embedding -> GRU -> Linear (`model.kind: gru`). State: (h,), (num_layers, B, hidden_dim)."""

    kind = "gru"
    _rnn_class = nn.GRU
    _rnn_attr = "gru"

    def forward_with_state(self, x: torch.Tensor, state: State | None
                           ) -> tuple[torch.Tensor, State]:
        emb = self.drop(self.embedding(x))  # (B, T, e)
        out, h = self.gru(emb, None if state is None else state[0])  # (B, T, h)
        return self.output(self.drop(out)), (h,)  # (B, T, V)


# --------------------------------------------------------------------------------------------
# The transformer


def rotary_tables(seq_len: int, head_dim: int, device: torch.device | None = None,
                  base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (seq_len, head_dim / 2) for rotary embeddings at positions 0..seq_len-1."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32)
                              / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (first half, second half) pair of x (B, H, T, D) by its position's angle."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_dim: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden_dim % num_heads or (hidden_dim // num_heads) % 2:
            raise ValueError(f"num_heads {num_heads} must divide hidden_dim {hidden_dim} into "
                             f"heads of even width (rotary embeddings rotate pairs)")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim, bias=False)
        self.proj = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        # (B, T, 3d) -> three (B, H, T, d/H)
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(
            2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) (GPT-2 placement of the norms)."""

    def __init__(self, hidden_dim: int, num_heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.attn = CausalSelfAttention(hidden_dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim, bias=False), nn.GELU(),
                                 nn.Linear(mlp_dim, hidden_dim, bias=False))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cos, sin))
        return x + self.drop(self.mlp(self.norm2(x)))


class TransformerLanguageModel(nn.Module):
    """A small decoder-only transformer (`model.kind: transformer`).

    Embedding (-> a bias-free projection to hidden_dim when embedding_dim differs) -> num_layers
    pre-norm blocks (causal multi-head attention through F.scaled_dot_product_attention, rotary
    positions, a GELU MLP of mlp_ratio x hidden_dim) -> LayerNorm -> Linear, the same output
    layer as the RNNs (with a bias; tied to the embedding when tie_weights).

    init "default" is GPT-2's: weights N(0, 0.02), the residual projections N(0, 0.02/sqrt(2L))
    so the residual stream's variance does not grow with depth; "uniform" then re-initialises
    the embedding and output as for the RNNs. No state is carried: each window starts at
    position 0, and the state is always ().
    """

    kind = "transformer"
    carries_state = False

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, num_layers: int,
                 *, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 tie_weights: bool = False, init: str = "default"):
        super().__init__()
        _check_tie(tie_weights, embedding_dim, hidden_dim)
        if init not in ("default", "uniform"):
            raise ValueError(f"init must be 'default' or 'uniform', got {init!r}")
        mlp_dim = round(mlp_ratio * hidden_dim)
        if mlp_dim < 1 or mlp_dim != mlp_ratio * hidden_dim:
            raise ValueError(f"mlp_ratio {mlp_ratio} x hidden_dim {hidden_dim} must be a whole "
                             f"number >= 1")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.input_proj = (nn.Linear(embedding_dim, hidden_dim, bias=False)
                           if embedding_dim != hidden_dim else nn.Identity())
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden_dim, num_heads, mlp_dim, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_dim)
        self.output = nn.Linear(hidden_dim, vocab_size)
        if tie_weights:
            self.output.weight = self.embedding.weight
        self._init_weights(num_layers)
        if init == "uniform":
            _uniform_init(self.embedding, self.output, tie_weights)

    def _init_weights(self, num_layers: int) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        cos, sin = rotary_tables(t, self.hidden_dim // self.num_heads, x.device)
        h = self.drop(self.input_proj(self.embedding(x)))  # (B, T, d)
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.output(self.norm(h))  # (B, T, V)

    def forward_with_state(self, x: torch.Tensor, state: State | None
                           ) -> tuple[torch.Tensor, State]:
        assert not state, "the transformer carries no state between windows"
        return self.forward(x), ()

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> State:
        return ()


LanguageModel = LargeLanguageModel | GRULanguageModel | TransformerLanguageModel


def build_model(cfg) -> LanguageModel:
    """The model a RunConfig describes (`model.kind` picks the class)."""
    m = cfg.model
    common = dict(dropout=m.dropout, tie_weights=m.tie_weights, init=m.init)
    args = (cfg.vocab_size, m.embedding_dim, m.hidden_dim, m.num_layers)
    if m.kind == "lstm":
        return LargeLanguageModel(*args, **common)
    if m.kind == "gru":
        return GRULanguageModel(*args, **common)
    if m.kind == "transformer":
        return TransformerLanguageModel(*args, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
                                        **common)
    raise ValueError(f"model.kind must be one of lstm, gru, transformer, got {m.kind!r}")
