"""Sources (files, hf through a local saved dataset, synthetic) and each bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer

from llmscale.config import load_config
from llmscale.data import load_tokens
from llmscale.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega").split()


def prose(n_lines, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=12)) + "." for _ in range(n_lines)]


def cfg(tmp_path, *extra):
    return load_config(None, [f"data.cache_dir={tmp_path / 'cache'}", *extra])


def decode(td, split):
    tok = Tokenizer.from_file(str(td.tokenizer_path))
    return tok.decode(getattr(td, split).tolist(), skip_special_tokens=False)


def test_text_files_glob_exact_bytes(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    lines = prose(400)
    lines[150] = "multi-byte: héllo wörld, 日本語, emoji \U0001F600"
    (d / "a.txt").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    (d / "b.txt").write_text("\n".join(lines[200:]) + "\n", encoding="utf-8")
    td = load_tokens(cfg(tmp_path, "data.source=files", f"data.paths=['{d}/*.txt']",
                         "tokenizer.kind=bytes", "tokenizer.vocab_size=null"), progress=False)
    total = sum(len((d / f).read_bytes()) for f in ("a.txt", "b.txt"))
    assert td.train_bytes + td.val_bytes == total  # every byte of the files, once
    assert 0 < td.val_bytes < 0.05 * total  # the held-out 1% (cut at a line)
    assert decode(td, "train") + decode(td, "val") == "\n".join(lines) + "\n"


def test_jsonl_and_parquet_documents_bpe(tmp_path):
    docs = prose(300, seed=1)
    jl = tmp_path / "docs.jsonl"
    jl.write_text("".join(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(docs)),
                  encoding="utf-8")
    pq = tmp_path / "more.parquet"
    datasets.Dataset.from_dict({"body": prose(100, seed=2)}).to_parquet(str(pq))
    td = load_tokens(cfg(tmp_path, "data.source=files", f"data.paths=['{jl}', '{pq}']",
                         "data.text_field=body", "data.val_fraction=0.1",
                         "tokenizer.vocab_size=300", "tokenizer.min_frequency=1"),
                     progress=False)
    assert td.train_bytes + td.val_bytes == sum(len(t.encode()) for t in docs + prose(100, 2))
    text = decode(td, "val")
    pieces = [p for p in text.split("<|endoftext|>") if p]
    assert len(pieces) == 40 and all(p in docs + prose(100, 2) for p in pieces)


def test_hf_saved_dataset_uses_its_validation_split(tmp_path):
    path = tmp_path / "ds"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": prose(300, 3), "n": list(range(300))}),
        "validation": datasets.Dataset.from_dict({"text": prose(30, 4), "n": list(range(30))}),
    }).save_to_disk(str(path))
    td = load_tokens(cfg(tmp_path, "data.source=hf", f"data.path={path}",
                         "tokenizer.kind=bytes", "tokenizer.vocab_size=null"), progress=False)
    assert td.val_bytes == sum(len(t.encode()) for t in prose(30, 4))
    assert td.train_bytes == sum(len(t.encode()) for t in prose(300, 3))
    capped = load_tokens(cfg(tmp_path, "data.source=hf", f"data.path={path}",
                             "data.max_bytes=5000",
                             "tokenizer.kind=bytes", "tokenizer.vocab_size=null"), progress=False)
    assert 4800 < capped.train_bytes <= 5000
    assert capped.fingerprint != td.fingerprint


def test_hf_local_builder_dir_streaming_with_max_bytes(tmp_path):
    """A directory of split files goes through load_dataset(path, streaming=True), as a hub
    dataset would; the split names come from the file names."""
    path = tmp_path / "builder"
    path.mkdir()
    for split, seed, n in (("train", 7, 400), ("validation", 8, 40)):
        (path / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in prose(n, seed)), encoding="utf-8")
    td = load_tokens(cfg(tmp_path, "data.source=hf", f"data.path={path}", "data.streaming=true",
                         "data.max_bytes=8000", "tokenizer.kind=bytes",
                         "tokenizer.vocab_size=null"), progress=False)
    assert 7800 < td.train_bytes <= 8000
    assert decode(td, "train").startswith(prose(1, 7)[0] + "<|endoftext|>")
    assert [p for p in decode(td, "val").split("<|endoftext|>") if p][0] == prose(40, 8)[0]


def test_hf_without_validation_holds_out_a_seeded_fraction(tmp_path):
    path = tmp_path / "ds1"
    datasets.Dataset.from_dict({"text": prose(200, 5)}).save_to_disk(str(path))
    base = ["data.source=hf", f"data.path={path}", "data.val_fraction=0.1",
            "tokenizer.kind=bytes", "tokenizer.vocab_size=null"]
    a = load_tokens(cfg(tmp_path, *base), progress=False)
    b = load_tokens(cfg(tmp_path / "other", *base), progress=False)  # fresh cache, same split
    assert np.array_equal(a.val, b.val)
    val_docs = [p for p in decode(a, "val").split("<|endoftext|>") if p]
    assert len(val_docs) == 20
    assert not set(val_docs) & {p for p in decode(a, "train").split("<|endoftext|>") if p}


def test_non_utf8_bytes_are_replaced_counted_and_warned(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(("\n".join(prose(200, 6)) + "\n").encode() + b"caf\xe9 na\xefve \xff\n")
    with pytest.warns(UserWarning, match=r"bad.txt: 3 invalid UTF-8"):
        td = load_tokens(cfg(tmp_path, "data.source=files", f"data.paths=['{f}']",
                             "tokenizer.kind=bytes", "tokenizer.vocab_size=null"), progress=False)
    assert "caf\ufffd na\ufffdve \ufffd" in decode(td, "val")


@pytest.mark.parametrize("case", ["missing_file", "empty", "no_field", "vocab_too_big",
                                  "hf_no_field"])
def test_bad_input_is_one_user_error_and_leaves_no_cache(tmp_path, case):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps({"content": t}) + "\n" for t in prose(50)), encoding="utf-8")
    ds = tmp_path / "ds"
    datasets.Dataset.from_dict({"content": prose(50)}).save_to_disk(str(ds))
    overrides, pattern = {
        "missing_file": (["data.source=files", f"data.paths=['{tmp_path}/nope*.txt']"],
                         r"data.paths: '.*nope\*\.txt' matches no file"),
        "empty": (["data.source=files", f"data.paths=['{empty}']"], r"corpus .* is empty"),
        "no_field": (["data.source=files", f"data.paths=['{jl}']"],
                     r"data.text_field: .* has no column 'text'; its columns are content"),
        "vocab_too_big": (["data.source=files", f"data.paths=['{jl}']", "data.text_field=content",
                           "tokenizer.vocab_size=5000"],
                          r"tokenizer.vocab_size: 5000 is more than this corpus supports"),
        "hf_no_field": (["data.source=hf", f"data.path={ds}"],
                        r"data.text_field: dataset .* has no column 'text'; its columns are content"),
    }[case]
    with pytest.raises(UserError, match=pattern) as info:
        load_tokens(cfg(tmp_path, *overrides), progress=False)
    assert "\n" not in str(info.value)
    tokens_dir = tmp_path / "cache" / "tokens"
    entries = [p for p in tokens_dir.iterdir() if p.is_dir()] if tokens_dir.exists() else []
    assert not any((p / "meta.json").exists() or list(p.glob("*.bin")) for p in entries)


def test_unknown_dataset_offline_is_a_user_error(tmp_path):
    code = ("from llmscale.config import load_config; from llmscale.data import load_tokens\n"
            "from llmscale.errors import UserError\n"
            "try:\n"
            f"    load_tokens(load_config(None, ['data.source=hf', 'data.cache_dir={tmp_path}',"
            " 'data.path=no-such-user-llmscale/no-such-dataset']))\n"
            "except UserError as e:\n"
            "    print('USERERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert "USERERROR data.path: cannot load dataset 'no-such-user-llmscale/no-such-dataset'" \
        in out.stdout, out.stderr[-2000:]


def test_cache_dir_precedence(tmp_path, monkeypatch):
    from llmscale.data.cache import cache_root

    monkeypatch.setenv("LLMSCALE_CACHE", str(tmp_path / "env"))
    assert cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert cache_root(None) == tmp_path / "env"
    monkeypatch.delenv("LLMSCALE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root(None) == tmp_path / "home" / ".cache" / "llmscale"
