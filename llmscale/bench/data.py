"""`llmscale bench data`: encoding throughput and batch-fetch cost, as figures.

1. Encoding: the token cache's encoder (encode_batch_fast, separators, dtype cast, write to a
   file) against raw `tokenizers` `Tokenizer.encode_batch` on the same texts with the same
   tokenizer, in the same run (target >= 0.8x). encode_batch_fast alone is shown too.
2. Batches: `TokenStream.batch` against one training step (forward, backward, AdamW) of the
   default small model at the default batch shape (target < 1%).
Each timing is the best of a few repeats, so a busy machine distorts the ratios less.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(quick: bool = False) -> None:
    import numpy as np
    import torch

    from llmscale.config import load_config
    from llmscale.data import cache, token_dtype
    from llmscale.data import tokenizer as tk
    from llmscale.data.batches import TokenStream
    from llmscale.data.sources import load_corpus
    from llmscale.model import build_model
    from llmscale.train import BatchFeed

    words = 300_000 if quick else 2_000_000
    cfg = load_config(None, [f"data.synthetic_tokens={words}"])
    corpus = load_corpus(cfg.data, cache.cache_root(cfg.data.cache_dir))
    texts = corpus.train
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus: synthetic, {len(texts)} texts, {mb:.1f} MB; torch threads "
          f"{torch.get_num_threads()}")
    t0 = time.perf_counter()
    tok = tk.train_bpe(texts, cfg.tokenizer)
    print(f"bpe training (vocab {cfg.vocab_size}): {time.perf_counter() - t0:.2f} s")

    dtype = token_dtype(cfg.vocab_size)
    repeats = 2 if quick else 3

    def raw() -> None:
        tok.encode_batch(texts, add_special_tokens=False)

    def raw_fast() -> None:
        tok.encode_batch_fast(texts, add_special_tokens=False)

    with tempfile.TemporaryDirectory() as tmp:
        def ours() -> None:
            with cache.AtomicArrayWriter(Path(tmp) / "train.bin", dtype) as w:
                for ids, _ in tk.encode_chunks(tok, "bpe", texts, separate=corpus.separate,
                                               dtype=dtype):
                    w.write(ids)

        raw()  # warm the tokenizer's caches for all three alike
        t_raw, t_fast, t_ours = _best(raw, repeats), _best(raw_fast, repeats), _best(ours, repeats)
    print(f"encode, raw tokenizers encode_batch:      {mb / t_raw:7.2f} MB/s  (baseline)")
    print(f"encode, raw tokenizers encode_batch_fast: {mb / t_fast:7.2f} MB/s  "
          f"({t_raw / t_fast:.2f}x)")
    print(f"encode, llmscale token cache (to disk):   {mb / t_ours:7.2f} MB/s  "
          f"({t_raw / t_ours:.2f}x baseline; target >= 0.8x)")

    ids = np.concatenate([x for x, _ in tk.encode_chunks(tok, "bpe", texts, separate=False,
                                                         dtype=dtype)])
    B, T = cfg.train.batch_size, cfg.train.seq_len
    stream = TokenStream(ids, B, T, seed=0)
    n_fetch = 200 if quick else 1000
    feed = BatchFeed(stream, torch.device("cpu"))  # what train_run feeds its steps with
    t_fetch = _best(lambda: [feed.get(i) for i in range(n_fetch)], repeats) / n_fetch

    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    state = model.init_state(B)
    x, y, _ = stream.batch(0)

    def step() -> None:
        logits, _ = model.forward_with_state(x, tuple(s.detach() for s in state))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    n_steps = 5 if quick else 20
    t_step = _best(lambda: [step() for _ in range(n_steps)], repeats) / n_steps
    print(f"batch fetch ({B}x{T}, uint16 -> int64): {t_fetch * 1e6:8.1f} us")
    print(f"train step (emb {cfg.model.embedding_dim}, hidden {cfg.model.hidden_dim}, vocab "
          f"{cfg.vocab_size}, fp32 CPU): {t_step * 1e3:8.2f} ms")
    print(f"batch fetch / train step: {100 * t_fetch / t_step:.3f}% (target < 1%)")
