"""load_tokens end to end on the synthetic source: bpe and bytes, cache reuse, TokenData."""

import logging

import numpy as np
import pytest
from tokenizers import Tokenizer

from llmscale.config import SPECIAL_TOKENS, load_config
from llmscale.data import load_tokens

TINY = ["data.synthetic_tokens=20000", "data.synthetic_val_tokens=3000",
        "data.synthetic_vocab=200"]


def tiny_cfg(tmp_path, *extra):
    return load_config(None, [*TINY, f"data.cache_dir={tmp_path}", *extra])


def test_bpe_synthetic_roundtrip_and_cache_reuse(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path, "tokenizer.vocab_size=600")
    with caplog.at_level(logging.INFO, logger="llmscale.data"):
        td = load_tokens(cfg, progress=False)
    assert any("training bpe" in r.message for r in caplog.records)
    assert td.vocab_size == cfg.vocab_size == 600
    assert td.train.dtype == np.uint16 and isinstance(td.train, np.memmap)
    assert not td.train.flags.writeable
    assert int(td.train.max()) < 600 and len(td.val) > 0
    assert td.entropy_bpb is not None and 0.3 < td.entropy_bpb < 3.0

    # The cached ids decode back to exactly train_bytes of text that the generator wrote.
    tok = Tokenizer.from_file(str(td.tokenizer_path))
    assert tok.get_vocab_size() == 600
    text = tok.decode(td.val.tolist(), skip_special_tokens=False)
    assert len(text.encode("utf-8")) == td.val_bytes
    assert td.val_bytes_per_token == pytest.approx(td.val_bytes / len(td.val))
    words = text.split("\n")
    assert words[-1] == "" and all(w and not w.startswith(" ") for w in words[:-1])

    # Second load: no training, no encoding, files untouched.
    files = sorted(td.tokenizer_path.parent.iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llmscale.data"):
        again = load_tokens(cfg, progress=False)
    msgs = " ".join(r.message for r in caplog.records)
    assert "training" not in msgs and "encoding" not in msgs and "cache hit" in msgs
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert again.fingerprint == td.fingerprint
    assert np.array_equal(again.train, td.train)


def test_bytes_tokenizer_ids_are_byte_values(tmp_path):
    cfg = tiny_cfg(tmp_path, "tokenizer.kind=bytes", "tokenizer.vocab_size=null")
    td = load_tokens(cfg, progress=False)
    assert td.vocab_size == 256 + len(SPECIAL_TOKENS)
    assert len(td.train) == td.train_bytes and len(td.val) == td.val_bytes
    # The saved tokenizer.json gives the same ids as the fast numpy path.
    tok = Tokenizer.from_file(str(td.tokenizer_path))
    sample = bytes(td.val[:500].astype(np.uint8)).decode("utf-8")
    assert tok.encode(sample, add_special_tokens=False).ids == td.val[:500].tolist()
    assert tok.token_to_id(SPECIAL_TOKENS[0]) == 256


def test_fingerprint_changes_with_settings(tmp_path):
    a = load_tokens(tiny_cfg(tmp_path, "tokenizer.vocab_size=500"), progress=False)
    b = load_tokens(tiny_cfg(tmp_path, "tokenizer.vocab_size=500", "data.seed=1"),
                    progress=False)
    assert a.fingerprint != b.fingerprint
    assert not np.array_equal(a.train[:100], b.train[:100])


def test_synthetic_entropy_matches_empirical_estimate():
    """-mean log2 p(x_t | x_{t-1}) under the true chain, over the text the pipeline writes,
    divided by its UTF-8 bytes, equals the closed-form rate within 1% (here ~0.1%)."""
    from llmscale.config import DataConfig
    from llmscale.data import synthetic
    from llmscale.data.sources import load_corpus

    d = DataConfig(synthetic_tokens=400_000, synthetic_val_tokens=1000)
    corpus = load_corpus(d, cache_dir=None)
    lang = synthetic.build_language(d.synthetic_vocab, d.synthetic_zipf, d.seed)
    assert corpus.entropy_bpb == lang.entropy_bpb()
    index = {w: i for i, w in enumerate(lang.words)}
    # Parse the text back into states: "\n" ends a document, words are space-separated.
    text = "".join(corpus.train)
    states = []
    for doc in text.split("\n")[:-1]:
        states.extend(index[w] for w in doc.split(" "))
        states.append(synthetic.EOD)
    states = np.array(states)
    prev = np.concatenate([[synthetic.EOD], states[:-1]])  # every chain starts after an EOD
    # p(prev -> next) from the CSR rows.
    row_len = np.diff(lang.indptr)
    keys = np.repeat(np.arange(lang.num_states), row_len) * lang.num_states + lang.succ
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], prev * lang.num_states + states)
    assert np.array_equal(keys[order][pos], prev * lang.num_states + states)  # all legal rules
    bits = -np.log2(lang.prob[order][pos]).sum()
    empirical = bits / len(text.encode("utf-8"))
    assert empirical == pytest.approx(corpus.entropy_bpb, rel=0.01)
    # whole documents, their number fixed in advance: about 400k word steps, give or take
    # the spread of 6k geometric document lengths (~1.3% standard deviation)
    assert len(states) == pytest.approx(400_000, rel=0.05)


def test_second_process_waits_on_the_lock_and_does_not_encode(tmp_path):
    """While the entry's lock is held (as by a process building it), two loaders wait; when it
    is released exactly one of them builds and the other reads its result."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from filelock import FileLock

    from llmscale.data import fingerprint

    overrides = [*TINY, f"data.cache_dir={tmp_path}", "tokenizer.vocab_size=500"]
    entry = tmp_path / "tokens" / fingerprint(load_config(None, overrides))
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "from llmscale.config import load_config; from llmscale.data import load_tokens\n"
            f"td = load_tokens(load_config(None, {overrides!r}), progress=False)\n"
            "print(len(td.train), int(td.train[:1000].sum()))\n")
    root = Path(__file__).resolve().parents[1]
    lock = FileLock(str(entry) + ".lock")
    lock.acquire()
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, text=True,
                              stdout=subprocess.PIPE, stderr=open(log, "w")) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while not all("waiting for another process" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-500:] for log in logs]
            time.sleep(0.05)
    finally:
        lock.release()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [log.read_text()[-1000:] for log in logs]
    text = "".join(log.read_text() for log in logs)
    assert text.count("training bpe") == 1 and text.count("encoding train") == 1
    assert outs[0] == outs[1] and outs[0].strip()
    assert lock.acquire(timeout=0) is not None  # the loaders released it
    lock.release()


def test_incomplete_or_inconsistent_entries_are_rebuilt(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path, "tokenizer.vocab_size=500")
    td = load_tokens(cfg, progress=False)
    want = np.array(td.train)
    entry = td.tokenizer_path.parent
    # An encode interrupted before meta.json: half a train.bin and a stray temp file.
    (entry / "meta.json").unlink()
    with open(entry / "train.bin", "r+b") as fh:
        fh.truncate(100)
    (entry / ".train.bin.x.tmp").write_bytes(b"junk")
    caplog.clear()  # only this load's messages (logging may be on at INFO from earlier tests)
    with caplog.at_level(logging.INFO, logger="llmscale.data"):
        again = load_tokens(cfg, progress=False)
    msgs = " ".join(r.message for r in caplog.records)
    assert "encoding train" in msgs and "training" not in msgs  # tokenizer.json was complete
    assert np.array_equal(again.train, want)
    assert not list(entry.glob("*.tmp"))
    # meta.json present but an array of the wrong size: not trusted either.
    with open(entry / "val.bin", "r+b") as fh:
        fh.truncate(10)
    third = load_tokens(cfg, progress=False)
    assert len(third.val) == len(td.val)
