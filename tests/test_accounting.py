import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from llmscale.accounting import (
    attention_macs_per_token,
    flops_per_token,
    forward_flops_per_token,
    matmul_macs_per_token,
    param_counts,
    run_accounting,
    tokens_for_flops,
)
from llmscale.config import ModelConfig, load_config
from llmscale.model import (
    GRULanguageModel,
    LargeLanguageModel,
    TransformerLanguageModel,
)


def _count_matmul_macs(model: LargeLanguageModel) -> int:
    """Multiply-adds of the matrix products in one forward, counted from the module's weights."""
    macs = 0
    for name, p in model.rnn.named_parameters():
        if name.startswith("weight_"):
            macs += p.numel()  # each weight entry is used once per token
    macs += model.output.weight.numel()
    return macs


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("v,e,h,layers", [(10000, 300, 500, 10), (257, 16, 32, 2), (4096, 64, 64, 1)])
def test_rnn_macs_per_token_equal_weight_entries_used(kind, v, e, h, layers):
    cls = LargeLanguageModel if kind == "lstm" else GRULanguageModel
    model = cls(v, e, h, layers)
    cfg = ModelConfig(kind=kind, embedding_dim=e, hidden_dim=h, num_layers=layers)
    assert matmul_macs_per_token(v, cfg) == _count_matmul_macs(model)
    assert flops_per_token(v, cfg) == 6 * _count_matmul_macs(model)


# --------------------------------------------------------------------------------------------
# FLOPs against torch's FLOP counter, over a whole model's forward.
#
# The counter sees the real modules' matrix products (nn.Linear, and the transformer's
# attention once its CPU kernel is given torch's own SDPA formula below). It cannot see inside
# nn.LSTM / nn.GRU: their CPU kernels are fused and opaque to it. For the RNNs we therefore run
# an unrolled forward built from the module's own weights with F.linear, check that it returns
# the module's logits (so it is the same computation), and count that.

_SDPA_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
             lambda q, k, v, *args, out_shape=None, **kw: sdpa_flop_count(q, k, v)}


def _counted(fn) -> tuple[torch.Tensor, int, dict]:
    with FlopCounterMode(display=False, custom_mapping=_SDPA_CPU) as counter:
        out = fn()
    return out, counter.get_total_flops(), counter.get_flop_counts()["Global"]


def _unrolled_rnn_logits(model, x: torch.Tensor) -> torch.Tensor:
    """model(x) for the LSTM or GRU, one time step and one layer at a time, from its weights."""
    inp = model.embedding(x)  # (B, T, e)
    rnn = model.rnn
    for layer in range(model.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        h = torch.zeros(x.shape[0], model.hidden_dim)
        c = torch.zeros_like(h)
        outs = []
        for t in range(x.shape[1]):
            gi, gh = F.linear(inp[:, t], w_ih, b_ih), F.linear(h, w_hh, b_hh)
            if model.kind == "lstm":  # gates i, f, g, o
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:  # gates r, z, n; n sees r * (W_hn h + b_hn)
                ir, iz, in_ = gi.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                h = (1 - z) * n + z * h
            outs.append(h)
        inp = torch.stack(outs, dim=1)
    return model.output(inp)


@pytest.mark.parametrize("kind,v,e,h,layers", [
    ("lstm", 300, 24, 40, 1), ("lstm", 97, 16, 16, 3), ("gru", 300, 24, 40, 2), ("gru", 50, 8, 12, 1),
])
def test_rnn_forward_flops_match_torch_flop_counter(kind, v, e, h, layers):
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, embedding_dim=e, hidden_dim=h, num_layers=layers)
    model = (LargeLanguageModel if kind == "lstm" else GRULanguageModel)(v, e, h, layers).eval()
    x = torch.randint(0, v, (3, 6))
    with torch.no_grad():
        logits, counted, by_op = _counted(lambda: _unrolled_rnn_logits(model, x))
        torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-5)  # the same function
    assert counted == x.numel() * forward_flops_per_token(v, cfg)
    assert by_op  # the counter saw the matrix products (addmm), not nothing


@pytest.mark.parametrize("v,e,h,layers,heads,ratio,seq_len", [
    (300, 32, 32, 2, 4, 4.0, 16),
    (97, 16, 24, 1, 2, 2.5, 9),  # e != d: the input projection; an odd window
    (50, 8, 8, 3, 1, 1.0, 32),
])
def test_transformer_forward_flops_match_torch_flop_counter(v, e, h, layers, heads, ratio, seq_len):
    """The counter runs the real module (SDPA included); the attention kernel is dense, so it
    counts the masked half of QK^T and AV that Kaplan's causal term leaves out: exactly twice."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind="transformer", embedding_dim=e, hidden_dim=h, num_layers=layers,
                      num_heads=heads, mlp_ratio=ratio)
    model = TransformerLanguageModel(v, e, h, layers, num_heads=heads, mlp_ratio=ratio).eval()
    x = torch.randint(0, v, (2, seq_len))
    with torch.no_grad():
        _, counted, by_op = _counted(lambda: model(x))
    tokens = x.numel()
    attention_dense = 2 * (2 * attention_macs_per_token(cfg, seq_len)) * tokens
    assert counted == tokens * 2 * matmul_macs_per_token(v, cfg) + attention_dense
    assert by_op[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] == attention_dense
    # ... and what accounting reports is the causal half on top of the parameter matmuls:
    assert forward_flops_per_token(v, cfg, seq_len) * tokens == counted - attention_dense // 2


def test_transformer_flops_grow_with_context_and_rnn_flops_do_not():
    t = ModelConfig(kind="transformer", embedding_dim=64, hidden_dim=64, num_layers=2)
    assert flops_per_token(1024, t, 512) - flops_per_token(1024, t, 256) == 6 * 2 * 256 * 64
    lstm = ModelConfig(embedding_dim=64, hidden_dim=64, num_layers=2)
    assert flops_per_token(1024, lstm, 512) == flops_per_token(1024, lstm, 64) == flops_per_token(
        1024, lstm)
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(1024, t)


def test_transformer_params_follow_kaplans_table():
    """Kaplan's N = 2 d n_layer (2 d_attn + d_ff) = 12 n_layer d^2 for d_ff = 4d, d_attn = d:
    ours adds only the LayerNorms and the (untied) output layer."""
    d, layers, v = 64, 3, 1000
    cfg = ModelConfig(kind="transformer", embedding_dim=d, hidden_dim=d, num_layers=layers)
    pc = param_counts(v, cfg)
    assert pc.embedding == v * d
    assert pc.nonembedding == 12 * layers * d * d + (2 * layers + 1) * 2 * d + d * v + v


def test_token_budget_from_flops_round_trips():
    cfg = ModelConfig(embedding_dim=64, hidden_dim=64, num_layers=2)
    fpt = flops_per_token(4096, cfg)
    assert tokens_for_flops(4096, cfg, fpt * 1000) == 1000
    assert tokens_for_flops(4096, cfg, fpt * 1000 - 1) == 999


def test_run_accounting_uses_flop_budget_when_set():
    cfg = load_config(None, ["train.flops=1e12", "tokenizer.kind=bytes",
                             "tokenizer.vocab_size=null"])
    acc = run_accounting(cfg)
    assert acc.tokens == int(1e12 // acc.flops_per_token)
    assert acc.flops == acc.tokens * acc.flops_per_token
    assert cfg.vocab_size == 257


def test_run_accounting_counts_the_transformers_context_from_train_seq_len():
    short = load_config(None, ["model.kind=transformer", "train.seq_len=64"])
    long = load_config(None, ["model.kind=transformer", "train.seq_len=512"])
    a, b = run_accounting(short), run_accounting(long)
    assert a.params_total == b.params_total  # rotary: no parameters depend on the context
    assert b.flops_per_token - a.flops_per_token == 6 * (512 - 64) * 64  # 1 layer, d = 64
