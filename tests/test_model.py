import re

import pytest
import torch

from llmscale.accounting import ParamCounts, param_counts
from llmscale.config import ModelConfig, load_config
from llmscale.errors import UserError
from llmscale.model import (
    GRULanguageModel,
    LargeLanguageModel,
    TransformerLanguageModel,
    build_model,
)


def test_forward_shape_matches_the_founding_example():
    model = LargeLanguageModel(vocab_size=50, embedding_dim=12, hidden_dim=16, num_layers=2)
    x = torch.randint(0, 50, (3, 7))
    logits = model(x)
    assert logits.shape == (3, 7, 50)


def test_founding_example_constructs_runs_backward_and_trains():
    torch.manual_seed(0)
    model = LargeLanguageModel(vocab_size=10000, embedding_dim=300, hidden_dim=500, num_layers=10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 100, (2, 8))  # a tiny corpus of 100 frequent tokens: easy to fit
    y = torch.roll(x, -1, dims=1)
    losses = []
    for _ in range(6):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10000), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_state_carrying_forward_equals_one_long_forward():
    torch.manual_seed(0)
    model = LargeLanguageModel(30, 8, 8, 2).eval()
    x = torch.randint(0, 30, (2, 10))
    full = model(x)
    first, state = model.forward_with_state(x[:, :4], None)
    second, _ = model.forward_with_state(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full)


def test_tied_weights_share_storage_and_need_equal_sizes():
    model = LargeLanguageModel(40, 16, 16, 1, tie_weights=True)
    assert model.output.weight is model.embedding.weight
    with pytest.raises(ValueError, match="tie_weights"):
        LargeLanguageModel(40, 8, 16, 1, tie_weights=True)


def test_uniform_init_and_dropout_options():
    model = LargeLanguageModel(40, 8, 8, 3, dropout=0.2, init="uniform")
    assert model.embedding.weight.abs().max() <= 0.1
    assert torch.count_nonzero(model.output.bias) == 0
    assert model.lstm.dropout == 0.2


@pytest.mark.parametrize("v,e,h,layers,tie", [
    (10000, 300, 500, 10, False),  # the founding example
    (257, 16, 16, 1, True),
    (4096, 64, 128, 2, False),
    (1000, 32, 32, 3, True),
    (50, 7, 13, 4, False),
])
def test_accounting_matches_the_built_module(v, e, h, layers, tie):
    model = LargeLanguageModel(v, e, h, layers, tie_weights=tie)
    total = sum(p.numel() for p in model.parameters())  # parameters() dedupes tied tensors
    embedding = model.embedding.weight.numel()
    counts = param_counts(v, ModelConfig(embedding_dim=e, hidden_dim=h, num_layers=layers, tie_weights=tie))
    assert counts == ParamCounts(total=total, embedding=embedding, nonembedding=total - embedding)


# --------------------------------------------------------------------------------------------
# Model kinds: one interface


def _cfg(kind: str, *extra: str):
    return load_config(None, [f"model.kind={kind}", "tokenizer.vocab_size=300",
                              "model.embedding_dim=16", "model.hidden_dim=16",
                              "model.num_layers=2", *extra])


@pytest.mark.parametrize("kind,cls,n_state", [("lstm", LargeLanguageModel, 2),
                                              ("gru", GRULanguageModel, 1),
                                              ("transformer", TransformerLanguageModel, 0)])
def test_build_model_gives_each_kind_the_same_interface(kind, cls, n_state):
    torch.manual_seed(0)
    model = build_model(_cfg(kind))
    assert type(model) is cls and model.kind == kind and model.carries_state == (n_state > 0)
    x = torch.randint(0, 300, (3, 7))
    assert model(x).shape == (3, 7, 300)
    state = model.init_state(3)
    assert len(state) == n_state and all(t.shape == (2, 3, 16) for t in state)
    logits, new_state = model.forward_with_state(x, state)
    assert logits.shape == (3, 7, 300) and len(new_state) == n_state
    # a fresh (zero) state and None are the same thing
    torch.testing.assert_close(model.forward_with_state(x, None)[0], logits)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gru_state_carrying_forward_equals_one_long_forward():
    torch.manual_seed(0)
    model = GRULanguageModel(30, 8, 8, 2).eval()
    x = torch.randint(0, 30, (2, 10))
    first, state = model.forward_with_state(x[:, :4], None)
    second, _ = model.forward_with_state(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), model(x))


def test_transformer_is_causal_and_windows_start_fresh():
    torch.manual_seed(0)
    model = TransformerLanguageModel(50, 16, 16, 2, num_heads=2).eval()
    x = torch.randint(0, 50, (2, 12))
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 1) % 50  # change the future only
    torch.testing.assert_close(model(x)[:, :8], model(y)[:, :8])
    assert not torch.allclose(model(x)[:, 8:], model(y)[:, 8:])
    # no memory: the second window is scored as if it began the stream
    _, state = model.forward_with_state(x[:, :6], None)
    assert state == ()
    torch.testing.assert_close(model.forward_with_state(x[:, 6:], state)[0], model(x[:, 6:]))


def test_transformer_positions_matter():
    """Rotary positions: the same tokens in another order give other logits at the last position
    even where attention alone (a bag of earlier tokens) could not tell them apart."""
    torch.manual_seed(0)
    model = TransformerLanguageModel(50, 16, 16, 1, num_heads=2).eval()
    a = torch.tensor([[1, 2, 3, 4, 5]])
    b = torch.tensor([[3, 1, 4, 2, 5]])  # same multiset, same last token
    assert not torch.allclose(model(a)[:, -1], model(b)[:, -1])


@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer"])
@pytest.mark.parametrize("e,h,layers,tie,extra", [
    (16, 16, 1, True, ()), (8, 24, 3, False, ("model.num_heads=3", "model.mlp_ratio=2.5")),
    (32, 32, 2, False, ("model.num_heads=8", "model.dropout=0.1", "model.init=uniform")),
])
def test_accounting_matches_the_built_module_for_every_kind(kind, e, h, layers, tie, extra):
    cfg = load_config(None, [f"model.kind={kind}", "tokenizer.vocab_size=300",
                             f"model.embedding_dim={e}", f"model.hidden_dim={h}",
                             f"model.num_layers={layers}", f"model.tie_weights={str(tie).lower()}",
                             *extra])
    model = build_model(cfg)
    total = sum(p.numel() for p in model.parameters())  # parameters() dedupes tied tensors
    embedding = model.embedding.weight.numel()
    assert param_counts(300, cfg.model) == ParamCounts(total=total, embedding=embedding,
                                                       nonembedding=total - embedding)
    if tie:
        assert model.output.weight is model.embedding.weight


@pytest.mark.parametrize("overrides,match", [
    (["model.kind=mamba"], "model.kind: 'mamba' is out of range; allowed: lstm, gru, transformer"),
    (["model.kind=transformer", "model.hidden_dim=64", "model.num_heads=5"],
     "model.num_heads: 5 must be >= 1 and divide model.hidden_dim"),
    (["model.kind=transformer", "model.hidden_dim=12", "model.num_heads=4"],
     "heads of even width"),
    (["model.kind=transformer", "model.mlp_ratio=0.25", "model.hidden_dim=10",
      "model.num_heads=1"], "model.mlp_ratio"),
    (["model.kind=gru", "model.tie_weights=true", "model.embedding_dim=32"],
     "model.tie_weights: true needs embedding_dim == hidden_dim"),
    (["model.kind=transformer", "model.tie_weights=true", "model.embedding_dim=32"],
     "model.tie_weights: true needs embedding_dim == hidden_dim"),
])
def test_bad_model_input_is_one_user_error(overrides, match):
    with pytest.raises(UserError, match=re.escape(match)) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_transformer_keys_on_an_rnn_are_ignored_with_a_note(caplog):
    base = load_config(None, [])
    with caplog.at_level("WARNING", logger="llmscale.config"):
        cfg = load_config(None, ["model.num_heads=5", "model.mlp_ratio=3"])
    # 5 heads would not divide hidden_dim 64: not checked, because an LSTM never reads it
    assert cfg.model.num_heads == 5 and cfg.run_id == base.run_id
    assert "model.num_heads, model.mlp_ratio only apply to model.kind transformer" in caplog.text
    gru = load_config(None, ["model.kind=gru"])
    assert gru.run_id != base.run_id
    assert load_config(None, ["model.kind=gru", "model.num_heads=8"]).run_id == gru.run_id
    # a run's own config.yaml lists every key at its value: the defaults are not noted
    caplog.clear()
    with caplog.at_level("WARNING", logger="llmscale.config"):
        load_config(None, ["model.kind=gru", "model.num_heads=4", "model.mlp_ratio=4.0"])
    assert "note:" not in caplog.text
    t4 = load_config(None, ["model.kind=transformer"])
    t8 = load_config(None, ["model.kind=transformer", "model.num_heads=8"])
    assert len({t4.run_id, t8.run_id, gru.run_id, base.run_id}) == 4


def test_run_ids_of_lstm_configs_did_not_change_with_model_kinds():
    """Pinned before model.kind existed (commit 4c895ab): a finished LSTM sweep is still finished."""
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert load_config(None, []).run_id == "1efa5ec98242"
    assert load_config(configs / "seed_example.yaml").run_id == "54691713dc9b"
    assert load_config(None, ["model.kind=lstm"]).run_id == "1efa5ec98242"


@pytest.mark.parametrize("setting", ["model.kind=rnn", "model.num_heads=3"])
def test_bad_model_kind_or_heads_on_the_command_line_is_one_line_and_exit_2(setting, capsys):
    from llmscale.cli import main

    rc = main(["validate", "--set", "model.kind=transformer", "--set", setting])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and setting.split("=")[0] in err, err
