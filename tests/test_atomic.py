"""Every atomic writer leaves the file mode a plain open() would give under the umask (the
temp files start as 0600), and no module writes files around llmscale.atomic."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from llmscale import atomic
from llmscale.checkpoint import checkpoint_dir, save_checkpoint
from llmscale.data import tokenizer as tk
from llmscale.data.cache import AtomicArrayWriter
from llmscale.model import LargeLanguageModel
from llmscale.records import RunRecord, upsert_record, write_json

PACKAGE = Path(__file__).resolve().parents[1] / "llmscale"


@pytest.fixture(params=[0o022, 0o027, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _writers(d: Path) -> list[Path]:
    """Call each writer once; return the files they wrote."""
    atomic.atomic_write_text(d / "a.txt", "x")
    atomic.atomic_write_bytes(d / "b.bin", b"x")
    atomic.atomic_write(d / "c.bin", lambda fh: fh.write(b"x"))
    with atomic.atomic_path(d / "d.npy") as tmp:
        np.save(tmp, np.zeros(3))
    with AtomicArrayWriter(d / "train.bin", np.dtype(np.uint16)) as w:
        w.write(np.arange(5, dtype=np.uint16))
    upsert_record(d / "results.csv", RunRecord(run_id="r", status="completed"))
    write_json(d / "record.json", {"a": 1})
    tk.save(tk.bytes_tokenizer(), d / "tokenizer.json")
    save_checkpoint(d / "run", LargeLanguageModel(20, 4, 4, 1), {"run_id": "r", "step": 1})
    (step,) = checkpoint_dir(d / "run").iterdir()  # checkpoint/step-1/: its files
    return [d / n for n in ("a.txt", "b.bin", "c.bin", "d.npy", "train.bin", "results.csv",
                            "record.json", "tokenizer.json")] + sorted(step.iterdir())


def test_every_atomic_writer_gives_the_mode_open_would(tmp_path, umask):
    with open(tmp_path / "plain", "w"):
        pass
    expected = _mode(tmp_path / "plain")
    assert expected == 0o666 & ~umask
    files = _writers(tmp_path)
    assert len(files) == 11
    for f in files:
        assert _mode(f) == expected, (f.name, oct(_mode(f)), oct(expected))
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temp files left behind


def test_a_whole_run_directory_respects_the_umask(tmp_path, umask):
    from llmscale.config import load_config
    from llmscale.train import train_run

    torch.set_num_threads(1)
    cfg = load_config(None, ["tokenizer.kind=bytes", "data.synthetic_tokens=3000",
                             "data.synthetic_val_tokens=300", "model.hidden_dim=8",
                             "model.embedding_dim=8", "train.batch_size=4", "train.seq_len=8",
                             "train.tokens=320", "eval.tokens=600"])
    rec = train_run(cfg, tmp_path / "run", "cpu", progress=False)
    assert rec.status == "completed", rec.error
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"record.json", "metrics.csv", "config.yaml", "tokenizer.json", "position_loss.csv",
            "weights.safetensors", "trainer_state.pt", "manifest.json"} <= names, names
    for f in files:
        assert _mode(f) == 0o666 & ~umask, (f.name, oct(_mode(f)))


def test_no_module_renames_temp_files_itself():
    """One primitive: only atomic.py makes temp files and renames them into place."""
    pattern = re.compile(r"\b(mkstemp|NamedTemporaryFile|os\.replace|os\.rename|\.rename\()")
    offenders = []
    for f in PACKAGE.rglob("*.py"):
        if f.name == "atomic.py" and f.parent == PACKAGE:
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{f.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not offenders, offenders
