import pytest
import torch

from llmscale.accounting import ParamCounts, param_counts
from llmscale.config import ModelConfig
from llmscale.model import LargeLanguageModel


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
