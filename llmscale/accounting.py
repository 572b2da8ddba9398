"""The only place parameter counts, FLOPs per token and token budgets are computed.

All of it comes from the config, without building the model; tests check it against the
built module. Conventions (Kaplan et al. 2020):

- params_embedding: the input embedding matrix, V x e.
- params_nonembedding: everything else = LSTM weights and biases + output projection
  (weight and bias). With tied weights the output matrix *is* the embedding, so only the
  output bias remains on the non-embedding side.
- flops_per_token (training): 6 x the matmul multiply-adds per token. Per LSTM layer the
  forward pass does 4h(i + h) multiply-adds (four gates, input and recurrent matrices), the
  output layer h*V; x2 FLOPs per multiply-add, x3 for forward + backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmscale.config import ModelConfig, RunConfig


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    nonembedding: int


def lstm_params(embedding_dim: int, hidden_dim: int, num_layers: int) -> int:
    """nn.LSTM: per layer W_ih (4h x i), W_hh (4h x h), b_ih and b_hh (4h each)."""
    total = 0
    for layer in range(num_layers):
        i = embedding_dim if layer == 0 else hidden_dim
        total += 4 * hidden_dim * (i + hidden_dim) + 2 * 4 * hidden_dim
    return total


def param_counts(vocab_size: int, model: ModelConfig) -> ParamCounts:
    e, h, v = model.embedding_dim, model.hidden_dim, vocab_size
    embedding = v * e
    lstm = lstm_params(e, h, model.num_layers)
    output = v if model.tie_weights else h * v + v  # the bias always; the matrix unless tied
    nonembedding = lstm + output
    return ParamCounts(total=embedding + nonembedding, embedding=embedding,
                       nonembedding=nonembedding)


def matmul_macs_per_token(vocab_size: int, model: ModelConfig) -> int:
    """Forward multiply-adds per token in matrix products (embedding lookup is not one)."""
    e, h = model.embedding_dim, model.hidden_dim
    macs = 0
    for layer in range(model.num_layers):
        i = e if layer == 0 else h
        macs += 4 * h * (i + h)
    return macs + h * vocab_size


def flops_per_token(vocab_size: int, model: ModelConfig) -> int:
    """Training FLOPs per token: 2 FLOPs per multiply-add, x3 for forward and backward."""
    return 6 * matmul_macs_per_token(vocab_size, model)


def tokens_for_flops(vocab_size: int, model: ModelConfig, flops: float) -> int:
    """Training tokens that a FLOP budget buys for this shape (rounded down)."""
    return int(flops // flops_per_token(vocab_size, model))


@dataclass(frozen=True)
class RunAccounting:
    params_total: int
    params_embedding: int
    params_nonembedding: int
    flops_per_token: int
    tokens: int  # planned training tokens (before rounding to whole optimizer steps)
    flops: float  # flops_per_token x tokens


def run_accounting(cfg: RunConfig) -> RunAccounting:
    """Counts for one run; the token budget comes from train.flops when it is set."""
    v = cfg.vocab_size
    pc = param_counts(v, cfg.model)
    fpt = flops_per_token(v, cfg.model)
    tokens = tokens_for_flops(v, cfg.model, cfg.train.flops) if cfg.train.flops else cfg.train.tokens
    return RunAccounting(params_total=pc.total, params_embedding=pc.embedding,
                         params_nonembedding=pc.nonembedding, flops_per_token=fpt,
                         tokens=tokens, flops=float(fpt) * tokens)
