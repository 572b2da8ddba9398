"""A run directory used as a model: score text files and generate text, from the directory alone.

A run directory holds what this needs (llmscale.layout): `config.yaml` (the model's shape and
tokenizer kind), `tokenizer.json`, and `checkpoint/weights.safetensors`. Nothing is read from
the token cache, so a run copied elsewhere, or whose cache is gone, still scores and samples.

    rm = load_run_model(run_dir)                      # checks all three agree
    score_file(rm, "other.txt")  -> FileScore         # loss, ppl, bits per byte, tokens
    generate(rm, prompt="The", tokens=200, temperature=0.8, seed=0) -> str
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmscale import checkpoint as ckpt
from llmscale import layout
from llmscale.config import RunConfig
from llmscale.errors import UserError


@dataclass
class RunModel:
    run_dir: Path
    cfg: RunConfig
    model: torch.nn.Module
    tokenizer: Any  # tokenizers.Tokenizer
    device: torch.device


@dataclass(frozen=True)
class FileScore:
    path: str
    tokens: int  # tokens the file encodes to
    bytes: int  # UTF-8 bytes of the file's text
    loss: float  # nats per predicted token (tokens - 1 are predicted)
    ppl: float  # exp(loss)
    bpb: float  # bits per UTF-8 byte: loss / ln 2 x tokens / bytes (comparable across tokenizers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_run_model(run_dir: str | Path, device: str = "cpu") -> RunModel:
    """The trained model of `run_dir`, its config and tokenizer; UserError when any is missing
    or when they disagree (a tokenizer whose vocabulary is not the weights')."""
    from llmscale.config import from_dict, read_yaml
    from llmscale.data import tokenizer as tk
    from llmscale.hardware import resolve_device
    from llmscale.model import build_model

    d = Path(run_dir)
    config = d / layout.CONFIG_FILE
    if not d.is_dir() or not config.is_file():
        raise UserError(f"{str(d)!r} is not a run directory (no {layout.CONFIG_FILE}); give a "
                        f"directory written by `llmscale train`, or a sweep's runs/<name>")
    # the resolved config as train_run wrote it (every key, so no notes about unused ones)
    cfg = from_dict(read_yaml(config))
    if ckpt.weights_path(d) is None:
        raise UserError(f"{str(d)!r} has no weights ({layout.CHECKPOINT_DIR}/"
                        f"{layout.STEP_PREFIX}<N>/{layout.WEIGHTS_FILE}): the run has not "
                        f"reached its first checkpoint")
    tok_path = d / layout.TOKENIZER_FILE
    if not tok_path.is_file():
        raise UserError(f"{str(d)!r} has no {layout.TOKENIZER_FILE} (runs written before it "
                        f"was kept cannot be used alone); retrain, or copy the token cache's")
    try:
        tok = tk.load(tok_path)
    except Exception as e:  # noqa: BLE001 - any unreadable tokenizer is the same user problem
        raise UserError(f"{str(tok_path)!r} is not a readable tokenizer ({e})") from None
    if tok.get_vocab_size() != cfg.vocab_size:
        raise UserError(f"{str(tok_path)!r} has {tok.get_vocab_size()} tokens but the run's "
                        f"weights expect vocab_size {cfg.vocab_size}: the tokenizer does not "
                        f"belong to these weights")
    dev = resolve_device(device)
    model = build_model(cfg)
    # the newest usable checkpoint's weights; UserError when none is, or the shapes are not
    # the config's
    found = ckpt.load_weights(d, model)
    if found.skipped:
        print(found.warning(), file=sys.stderr, flush=True)
    model.to(dev).eval()
    return RunModel(run_dir=d, cfg=cfg, model=model, tokenizer=tok, device=dev)


def read_text(path: str | Path) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--data {str(p)!r}: not UTF-8 text ({e.reason} at byte {e.start})"
                        ) from None
    except OSError as e:
        raise UserError(f"--data {str(p)!r}: cannot be read ({e.strerror or e})") from None


def encode(rm: RunModel, text: str) -> np.ndarray:
    """Token ids of `text` as one stream, the way the token cache encodes (no separators)."""
    from llmscale.data import token_dtype
    from llmscale.data import tokenizer as tk

    parts = [ids for ids, _ in tk.encode_chunks(rm.tokenizer, rm.cfg.tokenizer.kind, [text],
                                                 separate=False,
                                                 dtype=token_dtype(rm.cfg.vocab_size))]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def score_file(rm: RunModel, path: str | Path, *, batch_size: int | None = None
               ) -> FileScore:
    """Loss of the run's model on a UTF-8 text file, read the way training reads (contiguous
    streams, seq_len at a time, state carried; llmscale.train.evaluate_sum)."""
    from llmscale.train import evaluate_sum

    text = read_text(path)
    ids = encode(rm, text)
    n_bytes = len(text.encode("utf-8"))
    if len(ids) < 2:
        raise UserError(f"--data {str(path)!r}: {len(ids)} token(s); need at least 2 to score")
    x = torch.from_numpy(ids.astype(np.int64)).to(rm.device)
    total, count = evaluate_sum(rm.model, x, batch_size or rm.cfg.train.batch_size,
                                rm.cfg.train.seq_len, "fp32")
    loss = total / count
    return FileScore(path=str(path), tokens=len(ids), bytes=n_bytes, loss=loss,
                     ppl=math.exp(loss) if loss < 700 else math.inf,
                     bpb=loss / math.log(2) * len(ids) / n_bytes)


@torch.no_grad()
def generate(rm: RunModel, prompt: str = "", tokens: int = 200, temperature: float = 1.0,
             seed: int = 0) -> str:
    """`prompt` followed by `tokens` sampled tokens, decoded. temperature 0 is greedy.

    RNNs read the prompt once and then carry their state one token at a time; the transformer
    re-reads its last `train.seq_len` tokens for each new one (its training context)."""
    from llmscale.data import tokenizer as tk

    if tokens < 0:
        raise UserError(f"--tokens {tokens}: must be >= 0")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UserError(f"--temperature {temperature}: must be a finite number >= 0")
    ids = [int(i) for i in encode(rm, prompt)] if prompt else [tk.eot_id(rm.tokenizer)]
    n_prompt = len(ids) if prompt else 0
    gen = torch.Generator(device="cpu").manual_seed(seed)
    model, window = rm.model, rm.cfg.train.seq_len
    carries = getattr(model, "carries_state", True)
    x = torch.tensor([ids if carries else ids[-window:]], device=rm.device)
    state = None
    for _ in range(tokens):
        logits, state = model.forward_with_state(x, state if carries else None)
        last = logits[0, -1].float().cpu()
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            probs = torch.softmax(last / temperature, dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        ids.append(nxt)
        x = torch.tensor([[nxt]] if carries else [ids[-window:]], device=rm.device)
    return prompt + tk.decode(rm.tokenizer, np.asarray(ids[n_prompt:] if prompt else ids[1:]))
