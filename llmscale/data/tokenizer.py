"""Tokenizers: byte-level BPE trained with `tokenizers`, plain bytes, or whole words; and fast
encoding.

Every kind is saved as a `tokenizers` tokenizer.json, so any tool can decode the cached ids.
Special tokens (`SPECIAL_TOKENS`, document separator first) are part of every vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmscale.config import (
    BYTES_VOCAB_SIZE,
    SPECIAL_TOKENS,
    WORD_SPECIALS,
    WORD_UNKNOWN,
    TokenizerConfig,
)
from llmscale.errors import UserError

ENCODE_BATCH = 1024  # strings per encode_batch call: big enough to keep all cores busy


def train_bpe(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Byte-level BPE on `texts` (the training split only) with exactly cfg.vocab_size tokens."""
    assert cfg.vocab_size is not None
    tok = Tokenizer(models.BPE())
    # No prefix space: the text is a stream, and a leading space would add bytes not in it.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    got = tok.get_vocab_size()
    if got < cfg.vocab_size:
        raise UserError(
            f"tokenizer.vocab_size: {cfg.vocab_size} is more than this corpus supports: BPE found "
            f"only {got} tokens (pairs seen >= tokenizer.min_frequency={cfg.min_frequency} "
            f"times); lower tokenizer.vocab_size to at most {got} or give more data")
    assert got == cfg.vocab_size, (got, cfg.vocab_size)
    return tok


def train_words(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """One token per distinct whitespace-separated word of `texts` (the training split), after
    the specials and <|unk|> (words the training split never had). For languages whose words
    are their units (`data.source: facts`): no merges, so a token never spans two words, and
    the vocabulary, the model's output layer, is exactly the language's words.

    The vocabulary must have exactly cfg.vocab_size tokens (it sets the model's size before any
    text is read); a mismatch is an error that names the right value."""
    assert cfg.vocab_size is not None
    tok = Tokenizer(models.WordLevel(unk_token=WORD_UNKNOWN))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(
        vocab_size=2**31 - 1, min_frequency=1, show_progress=False,
        special_tokens=[*SPECIAL_TOKENS, WORD_UNKNOWN])
    tok.train_from_iterator(texts, trainer=trainer)
    got = tok.get_vocab_size()
    if got != cfg.vocab_size:
        raise UserError(
            f"tokenizer.vocab_size: {cfg.vocab_size}, but the training split has "
            f"{got - WORD_SPECIALS} distinct words, so kind word needs exactly {got} "
            f"({got - WORD_SPECIALS} words + {WORD_SPECIALS} specials); set "
            f"tokenizer.vocab_size={got}")
    return tok


def bytes_tokenizer() -> Tokenizer:
    """256 byte values (id == byte value) plus specials from id 256, no merges.

    Written in BPE form over the ByteLevel alphabet so `tokenizers` can load and decode it; the
    cache encodes with numpy instead (`encode_bytes`), which gives the same ids, faster."""
    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    for i, s in enumerate(SPECIAL_TOKENS):
        vocab[s] = 256 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    assert tok.get_vocab_size() == BYTES_VOCAB_SIZE
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (what ByteLevel uses)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def save(tok: Tokenizer, path: Path) -> None:
    """Atomic: tokenizer.json is either absent or complete."""
    from llmscale.atomic import atomic_write_text

    atomic_write_text(path, tok.to_str())


def load(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def eot_id(tok: Tokenizer) -> int:
    i = tok.token_to_id(SPECIAL_TOKENS[0])
    assert i is not None, "tokenizer lacks the document separator"
    return i


def encode_chunks(tok: Tokenizer, kind: str, texts: Iterable[str], *, separate: bool,
                  dtype: np.dtype) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (ids, utf8_bytes) per batch of texts; ids include a separator after each text
    when `separate` (documents), none when the texts are contiguous pieces of one stream."""
    eot = eot_id(tok)
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) >= ENCODE_BATCH:
            yield _encode_batch(tok, kind, batch, separate, eot, dtype)
            batch = []
    if batch:
        yield _encode_batch(tok, kind, batch, separate, eot, dtype)


def _encode_batch(tok: Tokenizer, kind: str, batch: list[str], separate: bool, eot: int,
                  dtype: np.dtype) -> tuple[np.ndarray, int]:
    raw = [t.encode("utf-8") for t in batch]
    nbytes = sum(len(b) for b in raw)
    if kind == "bytes":
        parts = [np.frombuffer(b, dtype=np.uint8) for b in raw]
    else:
        # encode_batch_fast: parallel in Rust, skips offsets we do not need.
        encs = tok.encode_batch_fast(batch, add_special_tokens=False)
        parts = [np.asarray(e.ids, dtype=np.uint32) for e in encs]
    if separate:
        sep = np.array([eot], dtype=np.uint32)
        parts = [x for p in parts for x in (p, sep)]
    ids = np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)
    return ids, nbytes


def decode(tok: Tokenizer, ids: np.ndarray) -> str:
    return tok.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=False)
