"""configs/families.yaml: three model kinds x five sizes on one corpus; and a reduced copy of it
run end to end, so every kind's run records its kind, its accounting and its loss by position.

(test_train.py tests exact resume for every kind without dropout; here with it.)"""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmscale.accounting import run_accounting
from llmscale.checkpoint import weights_path
from llmscale.cli import main
from llmscale.config import load_config
from llmscale.layout import CONFIG_FILE, POSITION_LOSS_FILE, RECORD_FILE
from llmscale.position import read_position_loss
from llmscale.records import read_record_json, read_results
from llmscale.sweep import plan_sweep
from llmscale.train import train_run

FAMILIES = Path(__file__).resolve().parents[1] / "configs" / "families.yaml"


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_families_is_three_kinds_by_at_least_five_sizes_on_one_corpus():
    runs = plan_sweep(load_config(FAMILIES))
    kinds = {r.model.kind for r in runs}
    assert kinds == {"lstm", "gru", "transformer"}
    for kind in kinds:
        mine = [r for r in runs if r.model.kind == kind]
        sizes = sorted({run_accounting(r).params_nonembedding for r in mine})
        assert len(sizes) >= 5, (kind, sizes)
        assert sizes[-1] / sizes[0] >= 5, (kind, sizes)
    assert len({r.run_id for r in runs}) == len(runs) == 15
    # one corpus, one tokenizer, one token budget and window for every kind
    assert len({(r.data, r.tokenizer, r.train.tokens, r.train.seq_len) for r in runs}) == 1
    # the transformer's loss by position stays inside the context it is trained on
    assert all(r.train.seq_len >= 512 for r in runs)


def test_families_reduced_end_to_end(tmp_path, capsys):
    """The families sweep shrunk by overrides (2 sizes, tiny budgets): every kind trains and
    its record and position_loss.csv come out."""
    out = tmp_path / "families"
    rc = main(["sweep", str(FAMILIES), "--out", str(out), "--no-analysis",
               "--set", "data.synthetic_tokens=60000", "--set", "data.synthetic_val_tokens=3000",
               "--set", "tokenizer.vocab_size=300", "--set", "train.tokens=8192",
               "--set", "train.batch_size=4", "--set", "eval.tokens=1100",
               "--set", "eval.every_tokens=8192",
               "--set", "sweep.grid={model.hidden_dim: [8, 16]}"])
    assert rc == 0, capsys.readouterr().err
    records, problems = read_results(out / "results.csv")
    assert problems == [] and len(records) == 6
    assert sorted(r.model_kind for r in records) == ["gru", "gru", "lstm", "lstm",
                                                    "transformer", "transformer"]
    # every kind records everything an LSTM run records
    lstm_filled = {k for r in records if r.model_kind == "lstm"
                   for k, v in r.to_dict().items() if v not in (None, "")}
    for r in records:
        missing = sorted(k for k in lstm_filled if r.to_dict()[k] in (None, ""))
        assert not missing, (r.model_kind, missing)
    for r in records:
        assert r.status == "completed", r.error
        assert r.run_dir
        cfg = load_config(out / r.run_dir / CONFIG_FILE)
        assert cfg.model.kind == r.model_kind and cfg.run_id == r.run_id
        acc = run_accounting(cfg)
        assert (r.params_nonembedding, r.flops_per_token) == (acc.params_nonembedding,
                                                              acc.flops_per_token)
        rows = read_position_loss(out / r.run_dir / POSITION_LOSS_FILE)
        assert [p for p, _ in rows] == list(range(1, 513))
        assert all(math.isfinite(v) for _, v in rows)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_new_kinds_resume_bitwise_with_dropout_and_accumulation(tmp_path, kind, one_thread):
    """Dropout (the GRU's between layers, the transformer's inside SDPA) draws from the RNG,
    and accumulation slices the carried state per micro-batch: an interrupted run still ends
    bitwise where the uninterrupted one does, position_loss.csv included."""
    cfg = load_config(None, [
        f"model.kind={kind}", "model.num_heads=2", "model.num_layers=2", "model.dropout=0.1",
        "tokenizer.kind=bytes", "tokenizer.vocab_size=null", "data.synthetic_tokens=6000",
        "data.synthetic_val_tokens=600", "model.embedding_dim=16", "model.hidden_dim=16",
        "train.batch_size=8", "train.micro_batch_size=4", "train.seq_len=16",
        "train.tokens=6144", "eval.tokens=1100", "output.log_every_steps=5"])
    full = train_run(cfg, tmp_path / "full", "cpu", progress=False)
    part = train_run(cfg, tmp_path / "part", "cpu", progress=False, stop_after_steps=17)
    assert (full.status, part.status) == ("completed", "preempted"), (full.error, part.error)
    resumed = train_run(cfg, tmp_path / "part", "cpu", progress=False)
    assert (resumed.val_loss, resumed.train_loss) == (full.val_loss, full.train_loss)
    a, b = load_file(str(weights_path(tmp_path / "full"))), load_file(str(weights_path(tmp_path / "part")))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_position_loss(tmp_path / "part") == read_position_loss(tmp_path / "full")


TINY_TRANSFORMER = [
    "model.kind=transformer", "model.num_heads=2", "model.num_layers=2",
    "tokenizer.kind=bytes", "tokenizer.vocab_size=null", "data.synthetic_tokens=6000",
    "data.synthetic_val_tokens=600", "model.embedding_dim=16", "model.hidden_dim=16",
    "train.batch_size=8", "train.micro_batch_size=2", "train.seq_len=16", "train.tokens=6144",
    "eval.tokens=1100", "output.log_every_steps=8",
]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_transformer_under_ddp_matches_one_process(tmp_path):
    """Two gloo ranks (torchrun) train the transformer as one process does: its empty carried
    state goes through the same gather and checkpoint path as the RNNs' state."""
    import os
    import subprocess
    import sys

    cli = ["-m", "llmscale", "train", *[a for s in TINY_TRANSFORMER for a in ("--set", s)],
           "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    repo = FAMILIES.parents[1]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", *cli[1:], "--out", str(tmp_path / "ddp")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, *cli, "--out", str(tmp_path / "one")], cwd=repo,
                         env=env, capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    a = read_record_json(tmp_path / "ddp" / RECORD_FILE)
    b = read_record_json(tmp_path / "one" / RECORD_FILE)
    assert (a.world_size, b.world_size, a.model_kind) == (2, 1, "transformer")
    assert a.tokens == b.tokens
    assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4)
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    pa, pb = read_position_loss(tmp_path / "ddp"), read_position_loss(tmp_path / "one")
    assert [v for _, v in pa] == pytest.approx([v for _, v in pb], rel=1e-4)
