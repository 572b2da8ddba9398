"""The facts language (llmscale.data.facts): its floor is exact, its facts are fixed by the seed,
its keys are several tokens that no tokenizer merges, and its theory reaches the records."""

import math

import numpy as np
import pytest

from llmscale.config import DataConfig, from_dict
from llmscale.data import facts, load_tokens
from llmscale.data.sources import facts_language, load_corpus
from llmscale.errors import UserError

SMALL = dict(facts_keys=4096, facts_zipf=1.5, facts_syllables=8, facts_values=8,
             facts_fillers=16, facts_filler_len=2)


def _parse(lang: facts.FactsLanguage, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(fact rank, value index) of every statement, read back from the text alone."""
    words = " ".join(texts).split()
    per = lang.tokens_per_statement
    assert len(words) % per == 0  # whole statements only
    stmts = np.array(words, dtype=object).reshape(-1, per)
    syl = {w: i for i, w in enumerate(lang.syllables)}
    val = {w: i for i, w in enumerate(lang.values)}
    fill = set(lang.fillers)
    assert all(w in fill for w in stmts[:, : lang.filler_len].ravel())
    spelled = np.array([[syl[w] for w in row] for row in stmts[:, lang.filler_len:-1]])
    rank_of = {tuple(s): r for r, s in enumerate(lang.key_spelling.tolist())}
    ranks = np.array([rank_of[tuple(s)] for s in spelled.tolist()])
    return ranks, np.array([val[w] for w in stmts[:, -1]])


def test_validation_text_scores_exactly_the_reported_floor():
    d = DataConfig(source="facts", synthetic_tokens=7000, synthetic_val_tokens=70_000, **SMALL)
    corpus = load_corpus(d, cache_dir=None)
    lang = facts_language(d)
    ranks, values = _parse(lang, corpus.val)
    # Scored by the true distribution: fillers uniform, the key Zipf, the value certain.
    nats = len(ranks) * lang.filler_len * math.log(lang.fillers.__len__()) \
        - np.log(lang.p[ranks]).sum()
    nbytes = sum(len(t.encode("utf-8")) for t in corpus.val)
    assert corpus.entropy_bpb * math.log(2) == pytest.approx(nats / nbytes, rel=1e-12)
    assert np.array_equal(values, lang.value_of[ranks])  # every statement states its fact
    assert corpus.theory["floor_nats_per_token"] == pytest.approx(
        nats / (len(ranks) * lang.tokens_per_statement), rel=1e-12)


def test_expected_rate_matches_a_large_sample():
    lang = facts.build_facts(**{k.removeprefix("facts_"): v for k, v in SMALL.items()}, seed=0)
    _, ranks = lang.sample(400_000, seed=1)
    per_statement = lang.realised_floor(ranks) / len(ranks)
    # The key's -ln p varies from statement to statement; allow 4 standard errors.
    sd = np.std(-np.log(lang.p[ranks])) / math.sqrt(len(ranks))
    assert abs(per_statement - lang.statement_entropy()) < 4 * sd
    freq1 = np.mean(ranks == 0)  # the commonest fact is stated with probability p_1
    assert freq1 == pytest.approx(lang.p[0], abs=4 * math.sqrt(lang.p[0] / len(ranks)))


def test_facts_are_fixed_by_the_seed_and_differ_across_seeds():
    a = facts.build_facts(4096, 1.5, 8, 8, 16, 2, seed=0)
    b = facts.build_facts(4096, 1.5, 8, 8, 16, 2, seed=0)
    c = facts.build_facts(4096, 1.5, 8, 8, 16, 2, seed=1)
    assert np.array_equal(a.value_of, b.value_of) and a.words == b.words
    assert not np.array_equal(a.value_of, c.value_of)
    # Distinct keys, each spelled with key_len syllables; the classes of words are disjoint.
    assert a.key_len == 4 and len({tuple(s) for s in a.key_spelling.tolist()}) == 4096
    assert len(set(a.words)) == len(a.words)
    assert a.theory == pytest.approx({"alpha": 0.5, "beta": 1 / 3})


def test_keys_are_several_tokens_and_the_cache_records_the_theory(tmp_path):
    cfg = from_dict({"data": {"source": "facts", "synthetic_tokens": 20_000,
                              "synthetic_val_tokens": 2000, "cache_dir": str(tmp_path), **SMALL},
                     "tokenizer": {"kind": "word", "vocab_size": 8 + 8 + 16 + 2}})
    data = load_tokens(cfg, progress=False)
    lang = facts_language(cfg.data)
    per = lang.tokens_per_statement
    assert len(data.val) % per == 0 and len(data.train) % per == 0
    from llmscale.data import tokenizer as tk

    tok = tk.load(data.tokenizer_path)
    # One token per word: a key is key_len tokens, each a syllable; nothing spans two words.
    stmts = np.asarray(data.train[: 100 * per], dtype=np.int64).reshape(100, per)
    syllable_ids = {tok.token_to_id(s) for s in lang.syllables}
    assert set(stmts[:, lang.filler_len:-1].ravel()) <= syllable_ids
    assert all(len(tok.id_to_token(i).split()) == 1 for i in range(tok.get_vocab_size()))
    assert data.theory["alpha"] == pytest.approx(0.5) and data.theory["beta"] == pytest.approx(1 / 3)
    assert data.entropy_bpb * math.log(2) * data.val_bytes_per_token == pytest.approx(
        data.theory["floor_nats_per_token"], rel=1e-9)


def test_word_vocabulary_must_match_and_says_the_right_size(tmp_path):
    cfg = from_dict({"data": {"source": "facts", "synthetic_tokens": 20_000,
                              "synthetic_val_tokens": 2000, "cache_dir": str(tmp_path), **SMALL},
                     "tokenizer": {"kind": "word", "vocab_size": 40}})
    with pytest.raises(UserError, match=r"tokenizer.vocab_size=34"):
        load_tokens(cfg, progress=False)


@pytest.mark.parametrize("key,value", [("facts_zipf", 1.0), ("facts_keys", 1),
                                       ("facts_syllables", 1), ("facts_values", 1)])
def test_bad_settings_are_one_line_errors(key, value):
    with pytest.raises(UserError, match=f"data.{key}"):
        from_dict({"data": {"source": "facts", key: value},
                   "tokenizer": {"kind": "word", "vocab_size": 66}})


def test_facts_keys_stay_out_of_other_sources_run_ids():
    base = from_dict({})
    assert from_dict({"data": {"facts_zipf": 2.0}}).run_id == base.run_id
    f = from_dict({"data": {"source": "facts"}, "tokenizer": {"kind": "word", "vocab_size": 66}})
    assert from_dict({"data": {"source": "facts", "synthetic_zipf": 2.0},
                      "tokenizer": {"kind": "word", "vocab_size": 66}}).run_id == f.run_id
    assert from_dict({"data": {"source": "facts", "facts_zipf": 1.5},
                      "tokenizer": {"kind": "word", "vocab_size": 66}}).run_id != f.run_id
