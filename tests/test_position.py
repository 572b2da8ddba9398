import csv

import pytest
import torch
import torch.nn.functional as F

from llmscale.atomic import default_file_mode
from llmscale.layout import POSITION_LOSS_FILE
from llmscale.model import GRULanguageModel, LargeLanguageModel, TransformerLanguageModel
from llmscale.position import position_loss, read_position_loss, write_position_loss

V = 40


def _models():
    torch.manual_seed(0)
    return [LargeLanguageModel(V, 8, 12, 2), GRULanguageModel(V, 8, 12, 1),
            TransformerLanguageModel(V, 8, 8, 2, num_heads=2)]


def _manual(model, val: torch.Tensor, context: int) -> torch.Tensor:
    """Each window scored alone, from a zero state / position 0, in one plain forward."""
    n = val.numel() // (context + 1)
    w = val[: n * (context + 1)].view(n, context + 1)
    with torch.no_grad():
        logits = model.eval()(w[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none").mean(dim=0)


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.kind)
def test_position_loss_scores_fresh_windows_position_by_position(model):
    val = torch.randint(0, V, (5 * 33 + 7,))  # 5 windows of 32 + 1, and a remainder left out
    rows = position_loss(model, val, context=32, batch_size=2)
    assert [p for p, _ in rows] == list(range(1, 33))
    torch.testing.assert_close(torch.tensor([loss for _, loss in rows], dtype=torch.float32),
                               _manual(model, val, 32))
    # Reading an RNN's window in truncated-BPTT chunks with the state carried is the same curve.
    chunked = position_loss(model, val, context=32, batch_size=3, chunk=5)
    assert [p for p, _ in chunked] == [p for p, _ in rows]
    assert [v for _, v in chunked] == pytest.approx([v for _, v in rows], rel=1e-5)


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.kind)
def test_position_p_sees_exactly_p_tokens_of_context(model):
    """Position p's loss is the prediction of token p + 1 from the window's first p tokens:
    changing a window from its 9th token on changes positions 8.. and leaves 1..7 alone."""
    val = torch.randint(0, V, (3 * 17,))
    base = [loss for _, loss in position_loss(model, val, context=16)]
    other = val.clone()
    other[17 + 8:34] = (other[17 + 8:34] + 1) % V  # window 2, tokens 9..17
    changed = [loss for _, loss in position_loss(model, other, context=16)]
    assert changed[:7] == pytest.approx(base[:7], rel=1e-6)  # predictions of tokens 2..8
    assert all(c != pytest.approx(b, rel=1e-6) for c, b in zip(changed[7:], base[7:], strict=True))
    # p = 1: token 2 predicted from token 1 alone, whatever stood before it in the split
    model.eval()
    with torch.no_grad():
        w = val.view(3, 17)
        first = F.cross_entropy(model(w[:, :1])[:, 0], w[:, 1]).item()
    assert base[0] == pytest.approx(first, rel=1e-5)


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.kind)
def test_every_kind_runs_contexts_of_512(model):
    val = torch.randint(0, V, (2 * 513,))
    rows = position_loss(model, val)  # the default context
    assert len(rows) == 512 and rows[-1][0] == 512
    assert all(0 < loss < 10 for _, loss in rows)


def test_the_models_training_mode_is_restored():
    model = _models()[0].train()
    position_loss(model, torch.randint(0, V, (40,)), context=8)
    assert model.training


def test_too_few_tokens_for_one_window_is_a_clear_error():
    with pytest.raises(ValueError, match="too few for one window of context 512"):
        position_loss(_models()[0], torch.randint(0, V, (512,)))
    with pytest.raises(ValueError, match="context must be >= 1"):
        position_loss(_models()[0], torch.randint(0, V, (10,)), context=0)


def test_position_loss_csv_round_trips_atomically(tmp_path):
    rows = position_loss(_models()[1], torch.randint(0, V, (4 * 9,)), context=8, max_windows=3)
    path = write_position_loss(tmp_path, rows)
    assert path == tmp_path / POSITION_LOSS_FILE
    assert path.stat().st_mode & 0o777 == default_file_mode()
    with open(path, newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["position", "loss"] and len(table) == 9
    assert read_position_loss(tmp_path) == rows  # floats written exactly (repr)
    assert [p.name for p in tmp_path.iterdir()] == [POSITION_LOSS_FILE]  # no temp file left
