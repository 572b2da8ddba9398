"""The only place parameter counts, FLOPs per token and token budgets are computed.

All of it comes from the config, without building the model; tests check it against the
built modules (parameters exactly; matmul FLOPs against torch's FLOP counter). Conventions,
after Kaplan et al. 2020 (section 2.1 and Table 1), for every `model.kind`:

- params_embedding: the token embedding matrix, V x e, plus position embeddings (there are
  none: the transformer's positions are rotary, parameter-free).
- params_nonembedding: everything else, the N of the scaling laws: the RNN's weights and
  biases, or the transformer's blocks (attention, MLP, LayerNorms), the projection from
  embedding_dim to hidden_dim when they differ, the final LayerNorm, and the output layer
  (weight and bias). With tied weights the output matrix *is* the embedding, so only the
  output bias remains on the non-embedding side. (Kaplan's GPT-2 models tie the output, so
  his N has no output matrix; ours keeps it when untied, the same way for every kind, and the
  design's LSTM convention stays as it was.)
- forward FLOPs per token = 2 x (multiply-adds of the matrix products with parameters)
  + the transformer's attention over its context: 2 x num_layers x n_ctx x hidden_dim, Kaplan's
  term (QK^T and attention x V, each n_ctx x d per token on average over a causal window,
  which is what the model uses; a dense kernel that computes the masked half too does twice
  that). n_ctx is train.seq_len, the window the transformer is trained on.
- flops_per_token (training) = 3 x forward (backward is twice the forward).

Matrix multiply-adds per token, forward: an LSTM layer 4h(i + h) (four gates, input and
recurrent matrices), a GRU layer 3h(i + h), a transformer block 4d^2 (QKV and output
projection) + 2 d d_ff (MLP), the e -> d projection e d when e != d, the output layer h V.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmscale.config import ModelConfig, RunConfig

# Gates per recurrent layer: each has an input and a recurrent matrix and two bias vectors.
_RNN_GATES = {"lstm": 4, "gru": 3}


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    nonembedding: int


def rnn_params(kind: str, embedding_dim: int, hidden_dim: int, num_layers: int) -> int:
    """nn.LSTM / nn.GRU: per layer W_ih (g h x i), W_hh (g h x h), b_ih and b_hh (g h each)."""
    g = _RNN_GATES[kind]
    total = 0
    for layer in range(num_layers):
        i = embedding_dim if layer == 0 else hidden_dim
        total += g * hidden_dim * (i + hidden_dim) + 2 * g * hidden_dim
    return total


def lstm_params(embedding_dim: int, hidden_dim: int, num_layers: int) -> int:
    return rnn_params("lstm", embedding_dim, hidden_dim, num_layers)


def mlp_dim(model: ModelConfig) -> int:
    """The transformer's MLP width d_ff (config validation makes it a whole number)."""
    return round(model.mlp_ratio * model.hidden_dim)


def _transformer_matmul_params(model: ModelConfig) -> int:
    """Weights of the transformer's bias-free matrices between embedding and output layer."""
    e, d = model.embedding_dim, model.hidden_dim
    per_block = 4 * d * d + 2 * d * mlp_dim(model)  # QKV + output projection, MLP in and out
    return (e * d if e != d else 0) + model.num_layers * per_block


def param_counts(vocab_size: int, model: ModelConfig) -> ParamCounts:
    e, h, v = model.embedding_dim, model.hidden_dim, vocab_size
    embedding = v * e  # rotary positions: no position embedding parameters
    if model.kind == "transformer":
        layer_norms = (2 * model.num_layers + 1) * 2 * h  # two per block and the final one
        body = _transformer_matmul_params(model) + layer_norms
    else:
        body = rnn_params(model.kind, e, h, model.num_layers)
    output = v if model.tie_weights else h * v + v  # the bias always; the matrix unless tied
    nonembedding = body + output
    return ParamCounts(total=embedding + nonembedding, embedding=embedding,
                       nonembedding=nonembedding)


def matmul_macs_per_token(vocab_size: int, model: ModelConfig) -> int:
    """Forward multiply-adds per token in products with parameter matrices (an embedding
    lookup is not one); the same for every position, unlike attention's context term."""
    e, h = model.embedding_dim, model.hidden_dim
    if model.kind == "transformer":
        body = _transformer_matmul_params(model)
    else:
        g = _RNN_GATES[model.kind]
        body = sum(g * h * ((e if layer == 0 else h) + h) for layer in range(model.num_layers))
    return body + h * vocab_size


def attention_macs_per_token(model: ModelConfig, seq_len: int | None) -> int:
    """Kaplan's context term, in multiply-adds per token forward: num_layers x n_ctx x d_attn
    (QK^T and attention-weighted values over a causal window of n_ctx, n_ctx / 2 keys on
    average each). Zero for the RNNs, whose cost per token does not grow with the context."""
    if model.kind != "transformer":
        return 0
    if seq_len is None:
        raise ValueError("the transformer's FLOPs per token depend on its context: pass seq_len "
                         "(train.seq_len)")
    return model.num_layers * seq_len * model.hidden_dim


def forward_flops_per_token(vocab_size: int, model: ModelConfig,
                            seq_len: int | None = None) -> int:
    """Forward FLOPs per token: 2 per multiply-add (Kaplan's C_forward, with the output layer)."""
    return 2 * (matmul_macs_per_token(vocab_size, model) + attention_macs_per_token(model, seq_len))


def flops_per_token(vocab_size: int, model: ModelConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token: forward x 3 (the backward pass costs twice the forward).

    `seq_len` (train.seq_len) is needed for the transformer only."""
    return 3 * forward_flops_per_token(vocab_size, model, seq_len)


def tokens_for_flops(vocab_size: int, model: ModelConfig, flops: float,
                     seq_len: int | None = None) -> int:
    """Training tokens that a FLOP budget buys for this shape (rounded down)."""
    return int(flops // flops_per_token(vocab_size, model, seq_len))


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
    v, seq_len = cfg.vocab_size, cfg.train.seq_len
    pc = param_counts(v, cfg.model)
    fpt = flops_per_token(v, cfg.model, seq_len)
    tokens = (tokens_for_flops(v, cfg.model, cfg.train.flops, seq_len) if cfg.train.flops
              else cfg.train.tokens)
    return RunAccounting(params_total=pc.total, params_embedding=pc.embedding,
                         params_nonembedding=pc.nonembedding, flops_per_token=fpt,
                         tokens=tokens, flops=float(fpt) * tokens)
