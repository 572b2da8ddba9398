"""The synthetic source's floor is exact: its validation split, scored with the true transition
probabilities, matches the reported entropy rate (whole documents, no length bias)."""

import math

import numpy as np
import pytest

from llmscale.config import DataConfig
from llmscale.data import synthetic
from llmscale.data.sources import load_corpus


def _true_nats_and_bytes(lang: synthetic.SyntheticLanguage, texts: list[str]) -> tuple[float, int]:
    """-sum ln p(x_t | x_{t-1}) under the true chain over the text, and its UTF-8 bytes."""
    index = {w: i for i, w in enumerate(lang.words)}
    text = "".join(texts)
    assert text.endswith("\n")  # whole documents only
    states = []
    for doc in text.split("\n")[:-1]:
        states.extend(index[w] for w in doc.split(" "))
        states.append(synthetic.EOD)
    states = np.array(states)
    prev = np.concatenate([[synthetic.EOD], states[:-1]])  # every document starts after an EOD
    keys = np.repeat(np.arange(lang.num_states), np.diff(lang.indptr)) * lang.num_states \
        + lang.succ
    order = np.argsort(keys)
    want = prev * lang.num_states + states
    pos = np.searchsorted(keys[order], want)
    assert np.array_equal(keys[order][pos], want)  # every transition is a rule of the language
    return float(-np.log(lang.prob[order][pos]).sum()), len(text.encode("utf-8"))


@pytest.mark.parametrize("vocab,zipf", [(64, 1.5), (512, 1.1)])
def test_validation_split_scores_the_reported_floor_within_a_tenth_of_a_percent(vocab, zipf):
    d = DataConfig(synthetic_vocab=vocab, synthetic_zipf=zipf, synthetic_tokens=1000,
                   synthetic_val_tokens=3_000_000)
    corpus = load_corpus(d, cache_dir=None)
    lang = synthetic.build_language(vocab, zipf, d.seed)
    nats, nbytes = _true_nats_and_bytes(lang, corpus.val)
    floor_nats_per_byte = corpus.entropy_bpb * math.log(2)  # what records and fit.json report
    assert nats / nbytes == pytest.approx(floor_nats_per_byte, rel=1e-3)


def test_documents_are_whole_and_their_count_is_fixed():
    lang = synthetic.build_language(64, 1.5, 0)
    a = synthetic.sample_states(lang, 65_000, seed=3)
    docs = sum(int((s == synthetic.EOD).sum()) for s in a)
    assert docs == round(65_000 / (synthetic.DOC_WORDS + 1))
    assert all(s[-1] == synthetic.EOD for s in a)
    b = synthetic.sample_states(lang, 65_000, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # seeded
