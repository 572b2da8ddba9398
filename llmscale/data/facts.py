"""A seeded synthetic language of facts whose scaling law is known (`data.source: facts`).

The text restates facts, key -> value, whose frequencies follow a Zipf law: fact k (k = 1..K)
is stated with probability p_k = k^(-a) / sum_j j^(-a). A model that knows the n most frequent
facts saves h nats on each statement of them, so its excess loss over the floor is
h * sum_{k>n} p_k, proportional to n^(1-a) (Hutter 2021, "Learning curve theory"; Michaud et
al. 2023, "The quantization model of neural scaling"). If the facts a model can hold grow in
proportion to its parameters, L(N) - E ~ N^-(a-1); if a fact is learned after a fixed number of
sightings, n(D) ~ D^(1/a) and L(D) - E ~ D^-((a-1)/a). So `a` alone sets the exponents the
harness should recover: alpha = a - 1, beta = (a - 1) / a.

One statement is `filler_len` filler words, a key, and the key's value, as whitespace-separated
words (one token each under `tokenizer.kind: word`):

    zu ro     be bi fe ga   lo
    (filler)  (key)         (value)

- Filler words are drawn uniformly and independently from `fillers` words: exactly
  log(fillers) nats each, learned by any model from a unigram count. They set a high, exact
  floor against which the facts' excess is small, which is what makes the irreducible loss E
  identifiable from a few sizes (DESIGN.md, "Designing a sweep that pins a law").
- The key is the fact's rank written in base `syllables`, most significant syllable first,
  `key_len` syllables (a seeded permutation of the syllables at each position, so the first
  key is not "ba ba ba ba"). Because frequent keys share leading syllables, the distribution
  of keys is a smooth function of the spelling that a small model learns cheaply; what costs
  capacity is each key's value. A key is several tokens, so the embedding table cannot hold a
  fact: the non-embedding parameters must, and N (non-embedding) is the capacity the law
  speaks of.
- The value is one of `values` words, fixed for each key by the seed; given the key it is
  certain (0 nats), unknown it costs up to log(values) nats.

Statements are independent, so the loss floor (the entropy of everything that is not a fact)
is exact: per statement filler_len * log(fillers) + H(Zipf), every statement has exactly
filler_len + key_len + 1 tokens, and `realised_floor` gives the loss the true distribution
scores on a given sample (no sampling error between the floor and a model evaluated on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class FactsLanguage:
    zipf: float  # a: fact k is stated with probability ~ k^-a
    syllables: tuple[str, ...]  # the key alphabet
    fillers: tuple[str, ...]  # filler words, uniform
    values: tuple[str, ...]  # value words
    filler_len: int  # filler words per statement
    key_len: int  # syllables per key
    key_spelling: np.ndarray  # (K, key_len) syllable index of each key, by rank
    value_of: np.ndarray  # (K,) value index of each key, by rank
    p: np.ndarray  # (K,) probability of each fact, by rank

    @property
    def keys(self) -> int:
        return len(self.p)

    @property
    def words(self) -> tuple[str, ...]:
        """Every word of the language: syllables, then values, then fillers (the id order of
        `sample`)."""
        return self.syllables + self.values + self.fillers

    @property
    def tokens_per_statement(self) -> int:
        return self.filler_len + self.key_len + 1

    @property
    def theory(self) -> dict[str, float]:
        """The exponents the mechanism predicts: alpha = a - 1 (capacity ~ N), beta = (a - 1)/a
        (a fact is learned after a fixed number of sightings)."""
        a = self.zipf
        return {"alpha": a - 1.0, "beta": (a - 1.0) / a}

    def key_entropy(self) -> float:
        """H of the Zipf law over keys, nats."""
        return float(-np.sum(self.p * np.log(self.p)))

    def statement_entropy(self) -> float:
        """Exact entropy of one statement, nats: the floor no model can beat."""
        return self.filler_len * math.log(len(self.fillers)) + self.key_entropy()

    def fact_payload(self) -> float:
        """Nats a statement costs a model that knows the key distribution but not the fact:
        log(values) (values are uniform over keys)."""
        return math.log(len(self.values))

    def statement_bytes(self) -> float:
        """Expected UTF-8 bytes of one statement; every word is followed by one byte of
        whitespace (a space, or the newline that ends a text)."""
        wlen = np.array([len(w.encode("utf-8")) + 1 for w in self.words], dtype=np.float64)
        syl, val = wlen[: len(self.syllables)], wlen[len(self.syllables): len(self.syllables)
                                                     + len(self.values)]
        fill = wlen[len(self.syllables) + len(self.values):]
        key_bytes = syl[self.key_spelling].sum(axis=1) + val[self.value_of]
        return float(self.filler_len * fill.mean() + np.dot(self.p, key_bytes))

    def entropy_bpb(self) -> float:
        """Expected entropy rate in bits per UTF-8 byte (statements are i.i.d.)."""
        return self.statement_entropy() / math.log(2) / self.statement_bytes()

    def sample(self, statements: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(word ids (statements, tokens_per_statement), fact rank of each statement), drawn
        at once: one searchsorted for the keys, one integer draw for the fillers."""
        rng = np.random.default_rng([seed, 0xFAC7])
        cum = np.cumsum(self.p)
        cum[-1] = 1.0
        rank = np.minimum(np.searchsorted(cum, rng.random(statements), side="right"),
                          self.keys - 1)
        s, v = len(self.syllables), len(self.values)
        ids = np.empty((statements, self.tokens_per_statement), dtype=np.int32)
        ids[:, : self.filler_len] = s + v + rng.integers(0, len(self.fillers),
                                                         (statements, self.filler_len))
        ids[:, self.filler_len: self.filler_len + self.key_len] = self.key_spelling[rank]
        ids[:, -1] = s + self.value_of[rank]
        return ids, rank

    def realised_floor(self, rank: np.ndarray) -> float:
        """Nats the true distribution scores on statements of these fact ranks, summed: the
        loss floor of exactly that sample."""
        filler = self.filler_len * math.log(len(self.fillers)) * len(rank)
        return float(filler - np.sum(np.log(self.p[rank])))

    def render(self, ids: np.ndarray, per_text: int = 256) -> tuple[list[str], int]:
        """Texts of `per_text` statements each (words joined by spaces, each text ending in a
        newline), and their total UTF-8 bytes."""
        table = np.array(self.words, dtype=object)
        texts = []
        for i in range(0, len(ids), per_text):
            texts.append(" ".join(table[ids[i: i + per_text].ravel()].tolist()) + "\n")
        return texts, sum(len(t.encode("utf-8")) for t in texts)


def build_facts(keys: int, zipf: float, syllables: int, values: int, fillers: int,
                filler_len: int, seed: int) -> FactsLanguage:
    """The language for these settings; the same settings and seed give the same facts."""
    rng = np.random.default_rng([seed, 0xFAC75])
    key_len = max(1, math.ceil(math.log(keys) / math.log(syllables) - 1e-12))
    words = _distinct_words(syllables + values + fillers, rng)  # the classes share no word
    syl = tuple(words[:syllables])
    val = tuple(words[syllables: syllables + values])
    fil = tuple(words[syllables + values:])
    digits = np.empty((keys, key_len), dtype=np.int32)
    r = np.arange(keys)
    for j in range(key_len - 1, -1, -1):
        digits[:, j] = r % syllables
        r //= syllables
    perm = np.stack([rng.permutation(syllables) for _ in range(key_len)], axis=1)
    spelling = perm[digits, np.arange(key_len)].astype(np.int32)
    value_of = rng.integers(0, values, keys).astype(np.int32)
    p = np.arange(1, keys + 1, dtype=np.float64) ** -zipf
    return FactsLanguage(zipf=zipf, syllables=syl, fillers=fil, values=val,
                         filler_len=filler_len, key_len=key_len, key_spelling=spelling,
                         value_of=value_of, p=p / p.sum())


def _distinct_words(n: int, rng: np.random.Generator) -> list[str]:
    """n distinct pronounceable lowercase words, shortest first: consonant-vowel syllables of
    one, then two, then three syllables."""
    out: list[str] = []
    length = 1
    while len(out) < n:
        pool = [c + v for c in _CONSONANTS for v in _VOWELS]
        combos = pool
        for _ in range(length - 1):
            combos = [a + b for a in combos for b in pool]
        take = rng.permutation(len(combos))[: n - len(out)]
        out.extend(combos[i] for i in sorted(take))
        length += 1
    return out
