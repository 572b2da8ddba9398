"""TokenStream: batchify layout, DDP shards, resumability, wrap-around, too-small splits."""

import numpy as np
import pytest
import torch

from llmscale.data.batches import TokenStream
from llmscale.errors import UserError


def tokens(n, dtype=np.uint16):
    return np.arange(n, dtype=np.int64).astype(dtype) if n < 65536 else \
        np.arange(n, dtype=np.uint32)


def test_layout_is_batchify_and_state_carries():
    t = tokens(1001)
    s = TokenStream(t, batch_size=4, seq_len=10, shuffle_epochs=False)
    assert s.row_len == 250 and s.steps_per_epoch == 25
    x0, y0, reset0 = s.batch(0)
    x1, _, reset1 = s.batch(1)
    assert reset0 and not reset1
    assert x0.dtype == torch.int64 and x0.shape == (4, 10)
    assert x0[:, 0].tolist() == [0, 250, 500, 750]  # row b starts row_len tokens later
    assert torch.equal(y0, x0 + 1)  # targets: the next token
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # step i+1 continues step i, row by row


def test_ddp_ranks_are_disjoint_and_cover_the_rows():
    t = tokens(20_000)
    world = 4
    seen = []
    for rank in range(world):
        s = TokenStream(t, 3, 16, rank=rank, world_size=world, seed=7)
        ids = torch.cat([s.batch(i)[0].flatten() for i in range(s.steps_per_epoch)])
        seen.append(set(ids.tolist()))
        assert len(seen[-1]) == ids.numel()  # within a rank, no token twice per epoch
    for a in range(world):
        for b in range(a + 1, world):
            assert not seen[a] & seen[b]
    union = set().union(*seen)
    assert len(union) >= 0.95 * len(t)  # an epoch covers all but the offset slack


def test_deterministic_resumable_and_epochs_shift():
    t = tokens(5000)
    a = TokenStream(t, 2, 8, seed=3)
    b = TokenStream(t, 2, 8, seed=3)  # "a resumed run": a fresh stream, same seed
    n = a.steps_per_epoch
    for step in (0, 5, n - 1, n, n + 3, 3 * n + 1):
        xa, ya, ra = a.batch(step)
        xb, yb, rb = b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ra == rb
    assert a.batch(n)[2] and not a.batch(n + 1)[2]  # wrap: new epoch resets the state
    offsets = {a.offset(e) for e in range(20)}
    assert len(offsets) > 1  # shuffled epochs start at different offsets
    other = TokenStream(t, 2, 8, seed=4)
    assert [other.offset(e) for e in range(20)] != [a.offset(e) for e in range(20)]


def test_batches_are_views_of_the_memmap(tmp_path):
    path = tmp_path / "t.bin"
    tokens(3000).tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    s = TokenStream(mm, 4, 16, shuffle_epochs=False)
    window, reset = s.window(2)
    # no copy: the window's memory is the memmap's, inside its mapped range
    assert np.shares_memory(window, mm)
    lo = mm.ctypes.data
    assert lo <= window.ctypes.data < lo + mm.nbytes
    base = window
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap) and str(base.filename) == str(path)
    assert not window.flags.writeable  # a view of read-only data stays read-only
    # and it is the right window: row 1 starts row_len tokens on, step 2 at column 32
    assert window[1, 0] == s.row_len + 32 and window.shape == (4, 17) and not reset
    # batch() makes exactly one copy, as int64, with the same ids
    x, y, _ = s.batch(2)
    assert not np.shares_memory(x.numpy(), mm)
    assert x[1, 0].item() == s.row_len + 32 and y[1, 0].item() == s.row_len + 33
    assert torch.equal(x, torch.from_numpy(window[:, :-1].astype(np.int64)))


def test_train_feed_copies_the_window_once_into_a_reused_buffer(tmp_path):
    from llmscale.train import BatchFeed

    path = tmp_path / "t.bin"
    tokens(3000).tofile(path)
    s = TokenStream(np.memmap(path, dtype=np.uint16, mode="r"), 4, 16, shuffle_epochs=False)
    feed = BatchFeed(s, torch.device("cpu"))
    x0, y0, _ = feed.get(0)
    ptr = x0.data_ptr()
    assert torch.equal(x0, s.batch(0)[0]) and torch.equal(y0, s.batch(0)[1])
    x1, y1, _ = feed.get(1)
    assert x1.data_ptr() == ptr and y1.data_ptr() == ptr + 8  # one buffer, x and y share it
    assert torch.equal(x1, s.batch(1)[0]) and torch.equal(y1, s.batch(1)[1])


def test_split_too_small_names_the_numbers():
    with pytest.raises(UserError, match=r"val split has 100 tokens.*8 x world_size 1 x seq_len "
                                         r"16 \+ 1 = 129.*eval.batch_size"):
        TokenStream(tokens(100), 8, 16, shuffle_epochs=False, split="val")
    TokenStream(tokens(129), 8, 16, shuffle_epochs=False)  # exactly one batch is fine
