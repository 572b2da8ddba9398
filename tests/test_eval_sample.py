"""`llmscale eval` and `llmscale sample` on a real trained run directory, and their bad inputs."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from llmscale.cli import main
from llmscale.config import load_config
from llmscale.evaluate import generate, load_run_model, score_file
from llmscale.train import evaluate, train_run

TINY = ["name=tiny", "tokenizer.kind=bytes", "data.synthetic_tokens=6000",
        "data.synthetic_val_tokens=600", "model.embedding_dim=16", "model.hidden_dim=32",
        "train.batch_size=8", "train.seq_len=16", "train.tokens=24000", "train.lr=1e-2",
        "eval.tokens=1500"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("run")
    rec = train_run(load_config(None, TINY), d, "cpu", progress=False)
    assert rec.status == "completed", rec.error
    return d


@pytest.fixture(scope="module")
def texts(run_dir, tmp_path_factory):
    """The run's own held-out text (the synthetic language) and random bytes as text."""
    d = tmp_path_factory.mktemp("texts")
    rm = load_run_model(run_dir)
    from llmscale.data import load_tokens

    val = load_tokens(rm.cfg, progress=False).val
    own = d / "own.txt"
    own.write_bytes(bytes(np.asarray(val[:1500], dtype=np.uint8)))  # bytes ids are the bytes
    noise = d / "noise.txt"
    rng = np.random.default_rng(0)
    noise.write_text("".join(chr(c) for c in rng.integers(33, 127, 1500)), encoding="utf-8")
    return own, noise


def test_eval_scores_files_as_training_evaluates(run_dir, texts):
    own, noise = texts
    rm = load_run_model(run_dir)
    s = score_file(rm, own)
    assert s.tokens == s.bytes == 1500  # the bytes tokenizer: one token per byte
    ids = torch.from_numpy(np.frombuffer(own.read_bytes(), dtype=np.uint8).astype(np.int64))
    assert s.loss == pytest.approx(evaluate(rm.model, ids, 8, 16, "fp32"), rel=1e-9)
    assert s.ppl == pytest.approx(math.exp(s.loss))
    assert s.bpb == pytest.approx(s.loss / math.log(2))  # one byte per token
    assert s.loss < math.log(257) - 1.0  # the model learnt the language
    assert score_file(rm, noise).loss > s.loss + 1.0  # and random characters are not it


def test_eval_cli_prints_one_row_per_file_and_json(run_dir, texts, capsys):
    own, noise = texts
    assert main(["eval", str(run_dir), "--data", str(own), str(noise)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["file", "tokens", "bytes", "loss", "ppl", "bpb"]
    assert [ln.split()[0] for ln in lines[1:]] == [str(own), str(noise)]
    assert main(["eval", str(run_dir), "--data", str(own), str(noise), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == [str(own), str(noise)]
    assert set(rows[0]) == {"path", "tokens", "bytes", "loss", "ppl", "bpb"}
    assert rows[0]["loss"] < rows[1]["loss"]


def test_sample_is_seeded_greedy_at_zero_and_continues_the_prompt(run_dir, capsys):
    rm = load_run_model(run_dir)
    a = generate(rm, "the ", tokens=40, temperature=1.0, seed=1)
    assert a.startswith("the ") and len(a.encode("utf-8", "replace")) >= 40
    assert generate(rm, "the ", tokens=40, temperature=1.0, seed=1) == a
    assert generate(rm, "the ", tokens=40, temperature=1.0, seed=2) != a
    greedy = {generate(rm, "the ", tokens=20, temperature=0, seed=s) for s in (1, 2)}
    assert len(greedy) == 1
    assert main(["sample", str(run_dir), "--prompt", "the ", "--tokens", "40", "--seed", "1"]) == 0
    assert capsys.readouterr().out == a + "\n"


def _one_line_exit_2(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_bad_inputs_are_one_line_exit_2(run_dir, texts, tmp_path, capsys):
    own, _ = texts
    _one_line_exit_2(capsys, ["eval", str(tmp_path), "--data", str(own)], "not a run directory")
    _one_line_exit_2(capsys, ["sample", str(tmp_path / "nope")], "not a run directory")
    missing = tmp_path / "missing.txt"
    _one_line_exit_2(capsys, ["eval", str(run_dir), "--data", str(own), str(missing)],
                     str(missing), "cannot be read")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage\xc3")
    _one_line_exit_2(capsys, ["eval", str(run_dir), "--data", str(binary)], str(binary), "UTF-8")
    _one_line_exit_2(capsys, ["eval", str(run_dir), "--data", str(tmp_path)], str(tmp_path))
    # a run without weights
    no_weights = tmp_path / "no_weights"
    shutil.copytree(run_dir, no_weights)
    shutil.rmtree(no_weights / "checkpoint")
    _one_line_exit_2(capsys, ["sample", str(no_weights)], "no weights")
    # a tokenizer that does not belong to the weights (a BPE of 266 tokens, weights of 257)
    from llmscale.config import TokenizerConfig
    from llmscale.data import tokenizer as tk

    wrong = tmp_path / "wrong_tok"
    shutil.copytree(run_dir, wrong)
    bpe = tk.train_bpe(["the quick brown fox jumps over the lazy dog " * 50],
                       TokenizerConfig(kind="bpe", vocab_size=266, min_frequency=1))
    tk.save(bpe, wrong / "tokenizer.json")
    _one_line_exit_2(capsys, ["eval", str(wrong), "--data", str(own)],
                     "266 tokens", "vocab_size 257", "does not belong")
    _one_line_exit_2(capsys, ["sample", str(run_dir), "--temperature", "-1"], "--temperature")
