"""Text sources: synthetic, local files (through `datasets` builders) and Hugging Face datasets.

Each source resolves to a `Corpus`: train and validation texts, whether the texts are separate
documents (joined with the end-of-text token) or contiguous pieces of one stream, and a
fingerprint of exactly what was read, which keys the tokenizer and token cache.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmscale.config import DataConfig
from llmscale.errors import UserError

log = logging.getLogger(__name__)

SOURCE_VERSION = 1  # bump when a source's output for the same settings changes
_BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".json": "json", ".jsonl": "json",
             ".parquet": "parquet"}


@dataclass(frozen=True)
class Corpus:
    train: list[str]
    val: list[str]
    separate: bool  # True: texts are documents (end-of-text token between); False: one stream
    fingerprint: str  # of the source, its content or revision, and the split settings
    entropy_bpb: float | None  # synthetic only: exact entropy rate, bits per UTF-8 byte
    description: str  # for logs
    # facts only: the loss floor of the validation text itself and the exponents its mechanism
    # predicts ({"alpha": a - 1, "beta": (a - 1) / a}); None for every other source.
    theory: dict[str, float] | None = None


def fingerprint_source(d: DataConfig) -> str:
    """The cache key of a source without reading it, where that is cheap and sound.

    Synthetic: its settings. Files: path, size and mtime of every matched file plus settings,
    so an edited file gets a new key. hf: name, config, revision (and a local dataset's file
    stats) plus settings."""
    parts: dict[str, Any] = {"v": SOURCE_VERSION, "source": d.source}
    if d.source == "synthetic":
        parts.update(vocab=d.synthetic_vocab, zipf=d.synthetic_zipf, train=d.synthetic_tokens,
                     val=d.synthetic_val_tokens, seed=d.seed)
    elif d.source == "facts":
        parts.update({k: getattr(d, k) for k in FACTS_KEYS},
                     train=d.synthetic_tokens, val=d.synthetic_val_tokens, seed=d.seed)
    else:
        parts.update(text_field=d.text_field, max_bytes=d.max_bytes, val_fraction=d.val_fraction,
                     seed=d.seed)
        if d.source == "files":
            parts["files"] = [_file_stat(p) for p in resolve_paths(d.paths)]
            if d.validation_paths:  # absent when unset, so older cache keys stay the same
                parts["validation_files"] = [
                    _file_stat(p) for p in resolve_paths(d.validation_paths, "data.validation_paths")]
        else:
            parts.update(path=d.path, name=d.name, revision=d.revision,
                         train_split=d.train_split, validation_split=d.validation_split)
            assert d.path is not None
            if Path(d.path).exists():
                root = Path(d.path)
                files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() \
                    else [root]
                parts["local"] = [_file_stat(str(p)) for p in files]
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_stat(path: str) -> list[Any]:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def load_corpus(d: DataConfig, cache_dir: Path) -> Corpus:
    fp = fingerprint_source(d)
    if d.source == "synthetic":
        return _synthetic(d, fp)
    if d.source == "facts":
        return _facts(d, fp)
    if d.source == "files":
        return _files(d, fp, cache_dir)
    return _hf(d, fp, cache_dir)


# ---------------------------------------------------------------------------- synthetic


def _synthetic(d: DataConfig, fp: str) -> Corpus:
    from llmscale.data import synthetic

    lang = synthetic.build_language(d.synthetic_vocab, d.synthetic_zipf, d.seed)
    # Different sample seeds for the splits, same language.
    train = [synthetic.render(lang, s) for s in
             synthetic.sample_states(lang, d.synthetic_tokens, seed=2 * d.seed)]
    val = [synthetic.render(lang, s) for s in
           synthetic.sample_states(lang, d.synthetic_val_tokens, seed=2 * d.seed + 1)]
    return Corpus(train, val, separate=False, fingerprint=fp, entropy_bpb=lang.entropy_bpb(),
                  description=f"synthetic(vocab={d.synthetic_vocab}, zipf={d.synthetic_zipf})")


# ---------------------------------------------------------------------------- facts

FACTS_KEYS = ("facts_keys", "facts_zipf", "facts_syllables", "facts_values", "facts_fillers",
              "facts_filler_len")


def facts_language(d: DataConfig):
    from llmscale.data import facts

    return facts.build_facts(d.facts_keys, d.facts_zipf, d.facts_syllables, d.facts_values,
                             d.facts_fillers, d.facts_filler_len, d.seed)


def _facts(d: DataConfig, fp: str) -> Corpus:
    lang = facts_language(d)
    per = lang.tokens_per_statement
    # Different sample seeds for the splits, same facts. Whole statements: the word counts are
    # rounded to a multiple of the statement length.
    train_ids, _ = lang.sample(max(1, round(d.synthetic_tokens / per)), seed=2 * d.seed)
    val_ids, val_rank = lang.sample(max(1, round(d.synthetic_val_tokens / per)),
                                    seed=2 * d.seed + 1)
    train, _ = lang.render(train_ids)
    val, val_bytes = lang.render(val_ids)
    # The floor of the evaluated text itself: what the true distribution scores on exactly
    # these statements, so a model's val_loss and its floor share the sample.
    floor_bpb = lang.realised_floor(val_rank) / math.log(2) / val_bytes
    theory = dict(lang.theory, entropy_rate_bpb=lang.entropy_bpb(),
                  floor_nats_per_token=lang.realised_floor(val_rank) / val_ids.size)
    return Corpus(train, val, separate=False, fingerprint=fp, entropy_bpb=floor_bpb,
                  description=f"facts(keys={d.facts_keys}, zipf={d.facts_zipf})", theory=theory)


# ---------------------------------------------------------------------------- files


def resolve_paths(patterns: tuple[str, ...], key: str = "data.paths") -> list[str]:
    """Expand globs; every pattern must match at least one file of a known type."""
    out: list[str] = []
    for pat in patterns:
        hits = sorted(glob.glob(os.path.expanduser(pat), recursive=True))
        hits = [h for h in hits if os.path.isfile(h)]
        if not hits:
            raise UserError(f"{key}: {pat!r} matches no file; give existing text (.txt), "
                            f"jsonl (.json, .jsonl) or parquet files or globs")
        for h in hits:
            if _builder_for(h) is None:
                raise UserError(f"{key}: {h!r} has an unknown extension; allowed: "
                                f"{', '.join(sorted(_BUILDERS))}")
        out.extend(hits)
    return sorted(set(out))


def _builder_for(path: str) -> str | None:
    name = path[:-3] if path.endswith(".gz") else path
    return _BUILDERS.get(Path(name).suffix.lower())


def hf_cache_dir(d: DataConfig, cache_dir: Path) -> str | None:
    """`datasets`' cache: under data.cache_dir when it is set; else datasets' own choice when
    the user set HF_DATASETS_CACHE or HF_HOME (cluster home quotas are small); else under
    llmscale's cache root."""
    if d.cache_dir is None and (os.environ.get("HF_DATASETS_CACHE") or os.environ.get("HF_HOME")):
        return None
    return str(cache_dir / "hf")


def _files(d: DataConfig, fp: str, cache_dir: Path) -> Corpus:
    paths = resolve_paths(d.paths)
    docs, contiguous = _read_files(paths, d, cache_dir, "data.paths")
    if d.validation_paths:
        val_paths = resolve_paths(d.validation_paths, "data.validation_paths")
        val, val_contiguous = _read_files(val_paths, d, cache_dir, "data.validation_paths")
        train, contiguous = docs, contiguous and val_contiguous
    else:
        train, val = _split_held_out(docs, d, contiguous)
    return Corpus(train, val, separate=not contiguous, fingerprint=fp, entropy_bpb=None,
                  description=f"files({len(paths)})")


def _read_files(paths: list[str], d: DataConfig, cache_dir: Path,
                key: str) -> tuple[list[str], bool]:
    """The texts of `paths`, and whether they are one contiguous stream (all plain text)."""
    import datasets

    by_builder: dict[str, list[str]] = {}
    for p in paths:
        by_builder.setdefault(_builder_for(p) or "", []).append(p)
    docs: list[str] = []
    contiguous = set(by_builder) == {"text"}
    for builder, files in sorted(by_builder.items()):
        kwargs: dict[str, Any] = {}
        if builder == "text":
            _warn_invalid_utf8(files)
            # Lines keep their "\n" so the rows concatenate back to the files' exact text.
            kwargs = {"keep_linebreaks": True, "encoding_errors": "replace"}
        try:
            ds = datasets.load_dataset(builder, data_files=files, split="train",
                                       cache_dir=hf_cache_dir(d, cache_dir), **kwargs)
        except Exception as e:  # a malformed json/parquet file: name it
            raise UserError(f"{key}: cannot read {', '.join(files)} as {builder}: "
                            f"{_first_line(e)}") from None
        field = "text" if builder == "text" else d.text_field
        docs.extend(_column(ds, field, f"files {', '.join(files)}"))
    return docs, contiguous


def _warn_invalid_utf8(files: list[str]) -> None:
    """Non-UTF-8 bytes are replaced by U+FFFD when read; count them per file and warn."""
    for f in files:
        raw = Path(f).read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            bad = text.count("\ufffd") - raw.count("\ufffd".encode())
            warnings.warn(f"{f}: {bad} invalid UTF-8 byte sequence(s) replaced by U+FFFD",
                          stacklevel=2)
            log.warning("%s: %d invalid UTF-8 byte sequence(s) replaced by U+FFFD", f, bad)


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


def _column(ds: Any, field: str, where: str) -> list[str]:
    names = list(ds.column_names or [])
    if field not in names:
        raise UserError(f"data.text_field: {where} has no column {field!r}; "
                        f"its columns are {', '.join(names) or '(none)'}")
    return [t for t in ds[field] if isinstance(t, str) and t]


def _split_held_out(docs: list[str], d: DataConfig, contiguous: bool
                    ) -> tuple[list[str], list[str]]:
    """A deterministic held-out fraction: the val_fraction of documents chosen by data.seed.

    For a stream (contiguous text pieces) the last val_fraction of the text is held out instead,
    so neither split has holes."""
    if not docs:
        return [], []
    if contiguous or len(docs) < 2:
        text = "".join(docs)
        cut = int(len(text) * (1.0 - d.val_fraction))
        # Cut at a line or space, so no word is split between train and val.
        nl = max(text.rfind("\n", 0, cut), text.rfind(" ", 0, cut))
        cut = nl + 1 if nl > 0 else cut
        return _pieces(text[:cut]), _pieces(text[cut:])
    rng = np.random.default_rng([d.seed, 0x5E1])
    n_val = max(1, round(len(docs) * d.val_fraction))
    is_val = np.zeros(len(docs), dtype=bool)
    is_val[rng.choice(len(docs), size=min(n_val, len(docs) - 1), replace=False)] = True
    return ([t for t, v in zip(docs, is_val, strict=True) if not v], [t for t, v in zip(docs, is_val, strict=True) if v])


def _pieces(text: str, size: int = 1 << 16) -> list[str]:
    """Cut a stream into ~64 KiB pieces at line ends, so encode_batch can spread them out."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


# ---------------------------------------------------------------------------- hf


def _hf(d: DataConfig, fp: str, cache_dir: Path) -> Corpus:
    import datasets

    assert d.path is not None
    where = f"dataset {d.path!r}" + (f" ({d.name})" if d.name else "")
    try:
        if _is_saved_dataset(Path(d.path)):
            # A dataset saved with save_to_disk: the same splits/columns path as a hub one.
            # It is memory-mapped already, so data.streaming changes nothing here.
            ds = datasets.load_from_disk(d.path)
        else:
            ds = datasets.load_dataset(d.path, d.name, revision=d.revision,
                                       streaming=d.streaming,
                                       cache_dir=hf_cache_dir(d, cache_dir))
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"data.path: cannot load {where}: {_first_line(e)} (check the name, "
                        f"data.name and network access; offline, only datasets already in the "
                        f"cache or saved locally with save_to_disk can be loaded)") from None
    splits = list(ds.keys()) if isinstance(ds, (datasets.DatasetDict,
                                                datasets.IterableDatasetDict)) else None
    if splits is None:
        ds = {d.train_split: ds}
        splits = [d.train_split]
    if d.train_split not in splits:
        raise UserError(f"data.train_split: {where} has no split {d.train_split!r}; "
                        f"its splits are {', '.join(splits)}")
    train = _read_split(ds[d.train_split], d.text_field, d.max_bytes, where)
    if d.validation_split and d.validation_split in splits:
        # data.max_bytes caps the training split only: validation splits are small, and a
        # capped one would make val_bpb noisier for no saving.
        val = _read_split(ds[d.validation_split], d.text_field, None, where)
    else:
        train, val = _split_held_out(train, d, contiguous=False)
    return Corpus(train, val, separate=True, fingerprint=fp, entropy_bpb=None,
                  description=f"hf({d.path}{'/' + d.name if d.name else ''})")


def _is_saved_dataset(p: Path) -> bool:
    return p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file())


def _read_split(split: Any, field: str, max_bytes: int | None, where: str) -> list[str]:
    """Texts of one split, streamed row by row, stopping after max_bytes UTF-8 bytes."""
    names = split.column_names
    if names is not None and field not in names:
        raise UserError(f"data.text_field: {where} has no column {field!r}; "
                        f"its columns are {', '.join(names) or '(none)'}")
    out: list[str] = []
    total = 0
    for row in split:
        if field not in row:
            raise UserError(f"data.text_field: {where} has no column {field!r}; "
                            f"its columns are {', '.join(row) or '(none)'}")
        t = row[field]
        if not isinstance(t, str) or not t:
            continue
        n = len(t.encode("utf-8"))
        if max_bytes is not None and total + n > max_bytes:
            rest = t.encode("utf-8")[: max_bytes - total].decode("utf-8", errors="ignore")
            if rest:
                out.append(rest)
            break
        out.append(t)
        total += n
    return out
