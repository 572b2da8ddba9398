"""Data: source -> tokenizer (trained once, cached) -> token cache (encoded once) -> memmaps.

`load_tokens(cfg)` is the entry point; `TokenStream` (llmscale.data.batches) cuts the memmaps
into truncated-BPTT batches. Everything is keyed by one fingerprint of the source (settings and
content or revision) and the tokenizer settings, so every run of a sweep shares one cache entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmscale.atomic import atomic_write_text

if TYPE_CHECKING:
    from llmscale.config import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenData:
    train: np.ndarray  # 1-D read-only np.memmap of token ids (uint16 if vocab < 65536 else uint32)
    val: np.ndarray  # same, validation split
    vocab_size: int  # == cfg.vocab_size (the model's vocab)
    train_bytes: int  # exact UTF-8 bytes of the text the train tokens encode
    val_bytes: int  # exact UTF-8 bytes of the text the val tokens encode
    tokenizer_path: Path  # tokenizer.json
    fingerprint: str  # cache key (source + content/revision + tokenizer settings)
    entropy_bpb: float | None  # synthetic source: its exact entropy rate, bits per UTF-8 byte
    # facts source: the exponents its mechanism predicts (alpha, beta), its expected entropy rate
    # and the floor of the validation tokens (llmscale.data.sources.Corpus.theory); else None
    theory: dict[str, float] | None = None

    @property
    def val_bytes_per_token(self) -> float:
        """UTF-8 bytes per validation token: bpb = loss_nats / ln 2 / val_bytes_per_token."""
        return self.val_bytes / len(self.val)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


def fingerprint(cfg: RunConfig) -> str:
    """Cache key: source fingerprint + tokenizer settings + special tokens + cache format."""
    from llmscale.config import SPECIAL_TOKENS
    from llmscale.data.cache import CACHE_VERSION
    from llmscale.data.sources import fingerprint_source

    t = cfg.tokenizer
    parts = {"source": fingerprint_source(cfg.data), "kind": t.kind, "vocab": cfg.vocab_size,
             "min_frequency": t.min_frequency if t.kind == "bpe" else None,
             "specials": list(SPECIAL_TOKENS), "cache": CACHE_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_tokens(cfg: RunConfig, *, progress: bool = True) -> TokenData:
    """Source -> tokenizer (trained once, cached) -> token cache (encoded once, cached) -> memmaps.

    A second process asking for the same entry while it is being built waits on a file lock
    and then reads it; it never encodes again."""
    from filelock import FileLock, Timeout

    from llmscale.data import cache

    root = cache.cache_root(cfg.data.cache_dir)
    cache.check_writable(root / "tokens")
    fp = fingerprint(cfg)
    entry = root / "tokens" / fp
    meta = cache.read_meta(entry)
    if meta is None:
        lock = FileLock(str(entry) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process building %s", entry)
            lock.acquire()
        try:
            meta = cache.read_meta(entry)  # another process may have finished it meanwhile
            if meta is None:
                meta = _build(cfg, entry, fp, root, progress)
        finally:
            lock.release()
    else:
        log.info("token cache hit %s", entry)
    assert meta["vocab_size"] == cfg.vocab_size, (meta["vocab_size"], cfg.vocab_size)
    return TokenData(
        train=cache.open_tokens(entry, "train", meta), val=cache.open_tokens(entry, "val", meta),
        vocab_size=meta["vocab_size"], train_bytes=meta["train"]["bytes"],
        val_bytes=meta["val"]["bytes"], tokenizer_path=entry / cache.TOKENIZER, fingerprint=fp,
        entropy_bpb=meta["entropy_bpb"], theory=meta.get("theory"))


def _build(cfg: RunConfig, entry: Path, fp: str, root: Path, progress: bool) -> dict:
    import sys

    from tqdm import tqdm

    from llmscale import faults
    from llmscale.atomic import atomic_write_bytes
    from llmscale.data import cache, sources
    from llmscale.data import tokenizer as tk
    from llmscale.errors import UserError

    # Every file goes into the build directory; cache.commit_entry renames it to `entry` whole.
    # We hold the lock, so anything already in it is left by an interrupted build: keep its
    # tokenizer (written atomically, so complete, and the slow part to redo), drop the rest.
    build = cache.build_dir(entry)
    build.mkdir(parents=True, exist_ok=True)
    for stale in build.iterdir():
        if stale.name != cache.TOKENIZER:
            stale.unlink()
    faults.point("cache-start")
    t0 = time.perf_counter()
    corpus = sources.load_corpus(cfg.data, root)
    if not any(t.strip() for t in corpus.train):
        raise UserError(f"data: the corpus from {corpus.description} is empty (no text but "
                        f"whitespace in the training split, field {cfg.data.text_field!r}); give a non-empty source")
    if not corpus.val:
        raise UserError(f"data: the validation split of {corpus.description} is empty; give more "
                        f"data or raise data.val_fraction")
    log.info("loaded %s in %.1fs", corpus.description, time.perf_counter() - t0)

    tok_path = build / cache.TOKENIZER
    if not tok_path.is_file() and (entry / cache.TOKENIZER).is_file():
        # an entry of an older version, its encode interrupted in place: its tokenizer is whole
        atomic_write_bytes(tok_path, (entry / cache.TOKENIZER).read_bytes())
    if tok_path.is_file():
        tok = tk.load(tok_path)  # complete (atomic); an earlier encode was interrupted
        log.info("tokenizer cache hit %s", tok_path)
    else:
        t0 = time.perf_counter()
        if cfg.tokenizer.kind == "bpe":
            log.info("training bpe tokenizer (vocab %d) on the training split", cfg.vocab_size)
            tok = tk.train_bpe(corpus.train, cfg.tokenizer)
        elif cfg.tokenizer.kind == "word":
            tok = tk.train_words(corpus.train, cfg.tokenizer)
        else:
            tok = tk.bytes_tokenizer()
        tk.save(tok, tok_path)
        log.info("tokenizer ready in %.1fs", time.perf_counter() - t0)
    faults.point("cache-tokenizer")

    dtype = token_dtype(cfg.vocab_size)
    meta: dict = {"version": cache.CACHE_VERSION, "fingerprint": fp,
                  "source_fingerprint": corpus.fingerprint, "source": corpus.description,
                  "tokenizer": {"kind": cfg.tokenizer.kind, "vocab_size": cfg.vocab_size,
                                "min_frequency": cfg.tokenizer.min_frequency},
                  "vocab_size": cfg.vocab_size, "dtype": dtype.name,
                  "entropy_bpb": corpus.entropy_bpb, "theory": corpus.theory,
                  "created": time.time()}
    for split, texts in (("train", corpus.train), ("val", corpus.val)):
        t0 = time.perf_counter()
        log.info("encoding %s split (%d texts)", split, len(texts))
        nbytes = 0
        with cache.AtomicArrayWriter(build / f"{split}.bin", dtype) as writer:
            bar = tqdm(total=len(texts), desc=f"encode {split}", unit="text", leave=False,
                       disable=not (progress and sys.stderr.isatty()))
            for ids, n in tk.encode_chunks(tok, cfg.tokenizer.kind, texts,
                                           separate=corpus.separate, dtype=dtype):
                writer.write(ids)
                nbytes += n
                bar.update(min(tk.ENCODE_BATCH, bar.total - bar.n))
            bar.close()
        meta[split] = {"tokens": writer.count, "bytes": nbytes}
        log.info("encoded %s: %d tokens, %d bytes in %.1fs", split, writer.count, nbytes,
                 time.perf_counter() - t0)
        faults.point(f"cache-{split}")
    atomic_write_text(build / cache.META, json.dumps(meta, indent=2) + "\n")
    cache.commit_entry(entry)  # the commit: from here the entry exists, whole
    return meta
