"""A seeded synthetic language whose entropy rate is known exactly.

The language is a first-order Markov chain over `V` words plus one end-of-document state:

- Words are short, unique lowercase strings; frequent words are short (as in real text).
- Row w of the transition matrix ("the rules after w") puts probability on a random subset of
  K_w successors, drawn with Zipf weights so frequent words are frequent successors, with
  Zipf(`zipf`) probabilities inside the row. Rows have different sizes (8 to 256 successors), so
  the ~100k rules have Zipf-distributed frequencies: a model learns the common ones from a few
  thousand tokens and keeps finding rarer ones as data and capacity grow (Hutter 2021,
  "Learning curve theory"). A softmax over 4096 tokens fed by a small hidden state cannot hold
  all rows (rank bottleneck), so bigger models keep doing better.
- Every word has probability `1/DOC_WORDS` of ending the document. The end state emits "\\n";
  the next word starts a new document.

Text: words joined by one space, each document ends with "\\n" ("cat sat\\ndog ran\\n"). The
byte stream is an invertible function of the state sequence, and every chain starts in the
end-of-document state, so a stream of complete documents is the chain itself (documents are
i.i.d. by regeneration). By the renewal-reward theorem its entropy rate in bits per byte is
exactly  H = sum_w pi(w) H(P[w, :])  /  sum_w pi(w) sum_w' P[w, w'] bytes(w -> w'),
with pi the stationary distribution. `entropy_bpb` computes it from the matrix, not a sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EOD = 0  # state index of end-of-document; words are 1..V
DOC_WORDS = 64  # mean words per document (geometric)
MIN_SUCCESSORS, MAX_SUCCESSORS = 8, 256  # rule-set size per word
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


@dataclass(frozen=True)
class SyntheticLanguage:
    words: tuple[str, ...]  # index 0 is the end-of-document state ("\n")
    indptr: np.ndarray  # (V+2,) CSR row offsets into succ / prob
    succ: np.ndarray  # successor state of each rule
    prob: np.ndarray  # probability of each rule; each row sums to 1
    # For sampling: row r's rules occupy (r, r+1] on one number line, so one searchsorted
    # over all chains at once picks every chain's next state.
    cum: np.ndarray

    @property
    def num_states(self) -> int:
        return len(self.words)

    def stationary(self) -> np.ndarray:
        """pi with pi P = pi, by power iteration on the sparse matrix (to ~1e-14)."""
        n = self.num_states
        rows = np.repeat(np.arange(n), np.diff(self.indptr))
        pi = np.full(n, 1.0 / n)
        for _ in range(10_000):
            new = np.bincount(self.succ, weights=pi[rows] * self.prob, minlength=n)
            # The end state is reached from everywhere with probability 1/DOC_WORDS, so the
            # chain is aperiodic and mixes fast; this converges in a few hundred iterations.
            if np.abs(new - pi).sum() < 1e-14:
                return new
            pi = new
        return pi

    def transition_bytes(self) -> np.ndarray:
        """UTF-8 bytes emitted by each rule w -> w': "\\n" for the end state, else the word,
        preceded by a space unless it starts a document."""
        n = self.num_states
        lens = np.array([len(w.encode("utf-8")) for w in self.words], dtype=np.float64)
        rows = np.repeat(np.arange(n), np.diff(self.indptr))
        space = ((rows != EOD) & (self.succ != EOD)).astype(np.float64)
        return lens[self.succ] + space

    def entropy(self) -> tuple[float, float]:
        """(bits per word-step, mean UTF-8 bytes per word-step), exact under the stationary law."""
        n = self.num_states
        rows = np.repeat(np.arange(n), np.diff(self.indptr))
        pi = self.stationary()
        h_rule = -self.prob * np.log2(self.prob)
        bits = float(np.sum(pi[rows] * h_rule))
        nbytes = float(np.sum(pi[rows] * self.prob * self.transition_bytes()))
        return bits, nbytes

    def entropy_bpb(self) -> float:
        bits, nbytes = self.entropy()
        return bits / nbytes


def build_language(vocab: int, zipf: float, seed: int) -> SyntheticLanguage:
    rng = np.random.default_rng([seed, 0x5EED])
    words = ("\n",) + _make_words(vocab, rng)
    n = vocab + 1
    # Zipf frequency of word ranks; words are already ordered by rank (short = frequent).
    word_weight = np.arange(1, vocab + 1, dtype=np.float64) ** -zipf
    log_w = np.log(word_weight)

    sizes = np.empty(n, dtype=np.int64)
    # Log-uniform rule-set sizes: some words are nearly deterministic, some very open.
    sizes[1:] = np.exp(rng.uniform(np.log(MIN_SUCCESSORS), np.log(MAX_SUCCESSORS + 1),
                                   size=vocab)).astype(np.int64)
    sizes[1:] = np.minimum(sizes[1:], vocab)
    sizes[EOD] = min(vocab, 1024)  # documents start with any common word
    succ_rows, prob_rows = [], []
    for r in range(n):
        k = int(sizes[r])
        # k distinct successors drawn with Zipf weights (Gumbel top-k), in random order so the
        # within-row Zipf ranks are unrelated to global frequency.
        keys = log_w + rng.gumbel(size=vocab)
        chosen = np.argpartition(-keys, k - 1)[:k] + 1
        rng.shuffle(chosen)
        p = np.arange(1, k + 1, dtype=np.float64) ** -zipf
        p /= p.sum()
        if r != EOD:
            chosen = np.concatenate([chosen, [EOD]])
            p = np.concatenate([p * (1.0 - 1.0 / DOC_WORDS), [1.0 / DOC_WORDS]])
        succ_rows.append(chosen)
        prob_rows.append(p)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(s) for s in succ_rows])
    succ = np.concatenate(succ_rows).astype(np.int64)
    prob = np.concatenate(prob_rows)
    cum = np.concatenate([r + np.cumsum(p) for r, p in enumerate(prob_rows)])
    cum[indptr[1:] - 1] = np.arange(1, n + 1)  # exact row ends despite rounding
    return SyntheticLanguage(words, indptr, succ, prob, cum)


def _make_words(vocab: int, rng: np.random.Generator) -> tuple[str, ...]:
    """`vocab` unique lowercase words; rank r gets length ~ 2 + log4(r), like real text."""
    out: list[str] = []
    seen: set[str] = set()
    for r in range(vocab):
        length = 1 + int(np.log(r + 2) / np.log(4)) + int(rng.integers(0, 2))
        while True:
            w = _LETTERS[rng.integers(0, 26, size=length)].tobytes().decode("ascii")
            if w not in seen:
                break
            length += 1  # short strings run out; go longer
        seen.add(w)
        out.append(w)
    return tuple(out)


def sample_states(lang: SyntheticLanguage, num_words: int, seed: int,
                  chains: int = 1024) -> list[np.ndarray]:
    """State sequences of whole documents, about `num_words` word steps in all.

    The number of documents is fixed in advance (num_words / the mean document length), and
    every chain runs until it has finished its share: no document is cut, none is dropped.
    Dropping each chain's unfinished last document, as a fixed number of steps would, keeps
    the documents that happened to be short (the inspection paradox) and makes the sample's
    entropy per byte differ from the language's; documents counted in advance are i.i.d.
    draws of the chain (each starts in the end state), so the sample is unbiased.
    `chains` independent chains advance together (one searchsorted per step for all)."""
    rng = np.random.default_rng([seed, 0xC4A1])
    n_docs = max(1, round(num_words / (DOC_WORDS + 1)))  # states per document: words + EOD
    chains = max(1, min(chains, n_docs))
    per_chain = np.full(chains, n_docs // chains)
    per_chain[: n_docs % chains] += 1
    blocks: list[np.ndarray] = []
    finished = np.zeros(chains, dtype=np.int64)  # documents completed per chain
    state = np.full(chains, EOD, dtype=np.int64)
    while (finished < per_chain).any():
        block = np.empty((4 * DOC_WORDS, chains), dtype=np.int32)
        for t in range(len(block)):
            u = rng.random(chains)
            idx = np.searchsorted(lang.cum, state + u, side="right")
            state = lang.succ[np.minimum(idx, len(lang.succ) - 1)]
            block[t] = state
        blocks.append(block)
        finished += (block == EOD).sum(axis=0)
    out = np.concatenate(blocks)
    seqs = []
    for c in range(chains):
        ends = np.flatnonzero(out[:, c] == EOD)
        seqs.append(out[: ends[per_chain[c] - 1] + 1, c])  # exactly its share of documents
    return seqs


def render(lang: SyntheticLanguage, states: np.ndarray) -> str:
    """Text of one state sequence that starts after an end state (so no leading space)."""
    emit = _emit_table(lang)
    text = "".join(emit[states].tolist())
    # Each word was emitted as " word"; a word right after "\n" starts a document: no space.
    return text.replace("\n ", "\n").removeprefix(" ")


def _emit_table(lang: SyntheticLanguage) -> np.ndarray:
    emit = np.array([" " + w for w in lang.words], dtype=object)
    emit[EOD] = "\n"
    return emit
