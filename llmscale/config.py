"""Typed, frozen run configuration: the one YAML loader, strict keys, `--set` overrides, run_id.

Precedence: dataclass defaults < YAML file < `--set section.key=value` overrides.

A config file has one section per dataclass below (`data`, `tokenizer`, `model`, `train`,
`eval`, `sweep`, `output`) plus a top-level `name`. Every field documents its unit. Unknown
keys, wrong types and out-of-range values raise `UserError` naming the key path, the value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from llmscale.errors import UserError

# Special tokens every tokenizer carries; the document separator is the first.
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>",)
BYTES_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
# tokenizer.kind word: the specials, then <|unk|> for words the training split never had.
WORD_UNKNOWN = "<|unk|>"
WORD_SPECIALS = len(SPECIAL_TOKENS) + 1
DATA_SOURCES = ("synthetic", "facts", "files", "hf")
TOKENIZER_KINDS = ("bpe", "bytes", "word")


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from. Everything here is fingerprinted into the token cache key."""

    source: str = "synthetic"  # synthetic (the Markov language) | facts (a known law) | files | hf
    # files: local text / jsonl / parquet files or globs, read through `datasets` builders.
    paths: tuple[str, ...] = ()
    # files: the validation split's files or globs (same formats as paths); when set, no
    # held-out fraction is cut from `paths` (val_fraction is unused).
    validation_paths: tuple[str, ...] = ()
    # hf: `datasets.load_dataset(path, name)`, e.g. path=wikitext, name=wikitext-103-raw-v1.
    path: str | None = None
    name: str | None = None
    revision: str | None = None
    text_field: str = "text"  # column holding the text (hf, jsonl, parquet)
    train_split: str = "train"
    validation_split: str | None = "validation"  # used when the dataset has it
    streaming: bool = False  # hf only: stream instead of downloading the whole dataset
    max_bytes: int | None = None  # cap on UTF-8 bytes read from the training split
    val_fraction: float = 0.01  # held-out fraction when there is no validation split
    # synthetic: a seeded language with an exactly known entropy rate (bits per byte).
    synthetic_tokens: int = 3_000_000  # words generated for the training split
    synthetic_val_tokens: int = 200_000  # words generated for the validation split
    synthetic_vocab: int = 2048  # distinct words in the synthetic language
    synthetic_zipf: float = 1.1  # Zipf exponent of word and rule frequencies
    # facts: statements of Zipf-distributed facts (llmscale.data.facts), a language whose scaling
    # law is known: alpha = facts_zipf - 1, beta = (facts_zipf - 1) / facts_zipf. Its sizes are
    # synthetic_tokens / synthetic_val_tokens (words = tokens under tokenizer.kind word).
    facts_keys: int = 65536  # distinct facts (keys), K
    facts_zipf: float = 1.4  # a: fact k is stated with probability ~ k^-a (> 1)
    facts_syllables: int = 16  # the key alphabet; a key is ceil(log K / log syllables) syllables
    facts_values: int = 16  # distinct values; an unknown fact costs up to ln(values) nats
    facts_fillers: int = 32  # filler words, uniform: ln(fillers) nats of exact floor each
    facts_filler_len: int = 2  # filler words per statement
    seed: int = 0  # seeds the synthetic generator and the held-out split
    cache_dir: str | None = None  # else $LLMSCALE_CACHE, else ~/.cache/llmscale


@dataclass(frozen=True)
class TokenizerConfig:
    # bpe (byte-level BPE trained on the training split) | bytes (256 + specials) | word (one
    # token per whitespace-separated word of the training split, plus specials and <|unk|>; for
    # synthetic languages whose words are their units)
    kind: str = "bpe"
    # Tokens in the vocabulary, specials included; sets the model's vocab_size.
    # The default 4096 is bpe's; kind=bytes leaves it unset (it is 256 + specials = 257); kind=word
    # must name the training split's distinct words + specials + 1 exactly.
    vocab_size: int | None = 4096
    min_frequency: int = 2  # BPE merges need a pair seen at least this often


MODEL_KINDS = ("lstm", "gru", "transformer")
# Keys only the transformer reads. On an RNN they are ignored (with a note when the user set
# them) and left out of run_id, so one YAML can sweep model.kind with num_heads set once.
TRANSFORMER_ONLY_KEYS = ("num_heads", "mlp_ratio")


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape. llmscale.model.build_model builds it; llmscale.accounting counts it."""

    kind: str = "lstm"  # lstm | gru | transformer (llmscale.model)
    embedding_dim: int = 64  # width of token embeddings
    hidden_dim: int = 64  # RNN hidden size, or the transformer's residual width (d_model), per layer
    num_layers: int = 1  # stacked RNN layers, or transformer blocks
    dropout: float = 0.0  # between layers and before the output projection, in [0, 1)
    tie_weights: bool = False  # share embedding and output matrices (needs embedding_dim == hidden_dim)
    init: str = "default"  # default (PyTorch's; GPT-2's for the transformer) | uniform (U(-0.1, 0.1) as word_language_model)
    num_heads: int = 4  # transformer only: attention heads; hidden_dim / num_heads must be even
    mlp_ratio: float = 4.0  # transformer only: MLP width = mlp_ratio x hidden_dim (an integer)


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 2_000_000  # training tokens, all ranks together
    flops: float | None = None  # FLOP budget; when set, tokens = flops / flops_per_token
    batch_size: int = 32  # sequences per optimizer step, all ranks together
    micro_batch_size: int | None = None  # sequences per forward; None = batch_size / world_size
    seq_len: int = 64  # truncated-BPTT length, tokens
    lr: float = 3.0e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr (~lr/10 per Chinchilla)
    warmup_frac: float = 0.02  # fraction of optimizer steps spent in linear warmup
    weight_decay: float = 0.1  # decoupled (AdamW)
    decay_embeddings_and_biases: bool = False  # False: no weight decay on biases and embeddings
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    seed: int = 0  # seeds weights, dropout and data order


@dataclass(frozen=True)
class EvalConfig:
    tokens: int = 100_000  # held-out tokens per evaluation (capped by the validation split)
    every_tokens: int | None = None  # evaluate every this many training tokens; None = ~10 times a run
    batch_size: int | None = None  # sequences per eval batch; None = train.batch_size


@dataclass(frozen=True)
class SlurmConfig:
    """Resources and site settings of the SLURM array (one task per run, executor slurm)."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 240  # wall-clock limit per array task, minutes
    gpus_per_run: int = 1  # GPUs per run; 0 on a CPU partition; > 1 runs DDP inside the task
    tasks_per_run: int | None = None  # processes (DDP ranks) per run; None = max(1, gpus_per_run)
    cpus_per_task: int = 8
    mem_gb: int = 64  # per array task (all its processes), GB
    max_parallel: int | None = None  # cap on array tasks running at once
    # Seconds before the time limit that SLURM signals the task (sbatch --signal): the run
    # checkpoints and the task requeues itself, resuming where it stopped. None: 120 s, or a
    # quarter of time_min when that is shorter (SLURM may signal up to 60 s early).
    signal_delay_s: int | None = None
    account: str | None = None  # sbatch --account
    qos: str | None = None  # sbatch --qos
    constraint: str | None = None  # sbatch --constraint (node features, e.g. "a100|h100")
    setup: tuple[str, ...] = ()  # shell lines run in the job before the task (module load ...)
    additional: dict[str, str | int | bool] = field(default_factory=dict)  # more sbatch options

    @property
    def signal_delay(self) -> int:
        """sbatch --signal lead time [s]: signal_delay_s, else min(120, time_min * 60 / 4)."""
        if self.signal_delay_s is not None:
            return self.signal_delay_s
        return max(1, min(120, self.time_min * 15))

    @property
    def tasks(self) -> int:
        """Processes (DDP ranks) per run."""
        return self.tasks_per_run if self.tasks_per_run is not None else max(1, self.gpus_per_run)


@dataclass(frozen=True)
class SweepConfig:
    """How the base run is varied. Keys are dotted config paths, e.g. `model.hidden_dim`.

    The runs are the product grid x zip x runs x seeds x budgets (an absent part is one empty
    override), applied to the base config; later parts win where they set the same key (an
    explicit `runs` entry overrides the grid). Then `derived` copies, in order, each source
    key's final value to its key. A budget sets train.flops and train.tokens = the tokens it
    buys that shape (llmscale.accounting). Points resolving to the same run_id run once.
    Learning rate is an ordinary axis (`train.lr: [...]`). Expansion: llmscale.sweep.plan_sweep.
    """

    grid: dict[str, list[Any]] = field(default_factory=dict)  # cartesian product
    zip: dict[str, list[Any]] = field(default_factory=dict)  # paired axes of equal length
    runs: list[dict[str, Any]] = field(default_factory=list)  # explicit runs (overrides each)
    seeds: list[int] = field(default_factory=list)  # train.seed axis
    budgets: list[float] = field(default_factory=list)  # FLOP budgets; tokens from accounting
    derived: dict[str, str] = field(default_factory=dict)  # e.g. model.embedding_dim: model.hidden_dim
    executor: str = "local"  # local | slurm
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


TRACKERS = ("tensorboard", "wandb")  # output.report_to values; llmscale.tracking


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/default"  # sweep directory (or run directory for `llmscale train`)
    log_every_steps: int = 10  # optimizer steps between metrics.csv rows
    checkpoint_every_minutes: float = 10.0  # wall-clock minutes between checkpoints
    checkpoint_every_tokens: int | None = None  # tokens between checkpoints (in addition)
    # checkpoints kept on disk, the newest K: a resume falls back past an unusable newest one
    # to the one before, so each one more costs one checkpoint of disk (llmscale.checkpoint)
    keep_checkpoints: int = 2
    # Run trackers (optional extras): tensorboard writes DIR/tb/, wandb logs a run (offline
    # when there is no network). Rank 0 only; runs are grouped by the sweep's name.
    report_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the tokenizer's, specials included."""
        if self.tokenizer.kind == "bytes":
            return BYTES_VOCAB_SIZE
        assert self.tokenizer.vocab_size is not None
        return self.tokenizer.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @property
    def run_id(self) -> str:
        return run_id(self)


# Sections that do not change what is trained, and so stay out of run_id.
_OUTPUT_ONLY_SECTIONS = ("name", "sweep", "output")
# Fields that do not change what is trained either (cache location only).
_OUTPUT_ONLY_FIELDS = (("data", "cache_dir"),)


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """The part of the config that determines the trained model: what run_id hashes."""
    d = cfg.to_dict()
    for key in _OUTPUT_ONLY_SECTIONS:
        d.pop(key, None)
    for section, key in _OUTPUT_ONLY_FIELDS:
        d[section].pop(key, None)
    # data.validation_paths came after the first runs: unset, it stays out of the hash.
    if not cfg.data.validation_paths:
        d["data"].pop("validation_paths")
    # model.kind came after the first runs: the default lstm stays out of the hash so their
    # run_ids do not change; keys the kind does not read stay out too (they change nothing).
    # The facts source came later still: its keys stay out of every other source's hash, and the
    # Markov language's keys, which it does not read, out of its own.
    facts_keys = [k for k in d["data"] if k.startswith("facts_")]
    for key in (("synthetic_vocab", "synthetic_zipf") if cfg.data.source == "facts"
                else facts_keys):
        d["data"].pop(key)
    if cfg.model.kind == "lstm":
        d["model"].pop("kind")
    if cfg.model.kind != "transformer":
        for key in TRANSFORMER_ONLY_KEYS:
            d["model"].pop(key)
    return d


def run_id(cfg: RunConfig) -> str:
    """A short, stable hash of the resolved run config (independent of key order and output)."""
    blob = json.dumps(run_identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def config_hash(cfg: RunConfig) -> str:
    """Hash of the whole resolved config, output settings included (for provenance)."""
    blob = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults < YAML file < `--set a.b=c` overrides, validated into a frozen RunConfig."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    cfg = from_dict(raw)
    _note_ignored_model_keys(raw, cfg)
    return cfg


def _note_ignored_model_keys(raw: dict[str, Any], cfg: RunConfig) -> None:
    """Transformer-only keys set on an RNN are ignored, not refused: a sweep over model.kind
    sets them once in the base config, and refusing would make that sweep unwritable.
    Only values other than the default are noted: a run's own config.yaml lists every key."""
    model = raw.get("model")
    if cfg.model.kind == "transformer" or not isinstance(model, dict):
        return
    defaults = ModelConfig()
    given = [f"model.{k}" for k in TRANSFORMER_ONLY_KEYS
             if k in model and getattr(cfg.model, k) != getattr(defaults, k)]
    if given:
        logging.getLogger("llmscale.config").warning(
            "note: %s only %s to model.kind transformer; ignored for kind %s (and left "
            "out of its run_id)", ", ".join(given), "applies" if len(given) == 1 else "apply",
            cfg.model.kind)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config file {str(p)!r} cannot be read: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"config file {str(p)!r} is not valid YAML{where}: {problem}") from None
    if doc is None:
        raise UserError(f"config file {str(p)!r} is empty; expected a mapping of sections "
                        f"({', '.join(_section_names())})")
    if not isinstance(doc, dict):
        raise UserError(f"config file {str(p)!r} must be a mapping of sections "
                        f"({', '.join(_section_names())}), got a {type(doc).__name__}")
    return doc


def parse_override(item: str) -> tuple[str, Any]:
    """`section.key=value` with the value parsed as YAML (so lists and numbers work)."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key:
        raise UserError(f"--set {item!r}: the key before '=' is empty")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def with_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A new validated config with dotted-key overrides applied (used by sweep expansion)."""
    raw = cfg.to_dict()
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> RunConfig:
    tok = raw.get("tokenizer") if isinstance(raw, dict) else None
    if isinstance(tok, dict) and tok.get("kind") == "bytes" and "vocab_size" not in tok:
        # The default vocab_size (4096) is bpe's: kind bytes has no choice to make.
        raw = {**raw, "tokenizer": {**tok, "vocab_size": None}}
    cfg = _build(RunConfig, raw, "")
    _check_ranges(cfg)
    return cfg


def valid_keys() -> list[str]:
    """Every dotted key a config may set (for error messages and docs)."""
    out: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            t = _hints(cls)[f.name]
            if dataclasses.is_dataclass(t):
                walk(t, f"{prefix}{f.name}.")
            else:
                out.append(prefix + f.name)

    walk(RunConfig, "")
    return out


def _section_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping, got {raw!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            path = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix}{close[0]!s}?" if close else ""
            raise UserError(f"unknown key {path!r}{hint} (valid keys in {where}: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        t = hints[name]
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(t):
            kwargs[name] = _build(t, raw[name], path + ".")
        else:
            kwargs[name] = _coerce(path, raw[name], t)
    return cls(**kwargs)


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(t))
    if t is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(t, "__name__", str(t))


def _coerce(path: str, value: Any, t: Any) -> Any:
    """Check (and where unambiguous, convert) `value` to type `t`, or raise UserError."""
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(path, value, a)
            except UserError as e:
                errors.append(e)
        raise UserError(f"{path}: expected {_type_name(t)}, got {value!r}")
    if t is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{path}: expected true or false, got {value!r}")
    if t is int:
        if isinstance(value, bool):
            raise UserError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        # YAML reads 2e6 as a string and 2.0e6 as a float: accept integral numbers either way.
        num = _as_number(value)
        if num is not None and math.isfinite(num) and float(num).is_integer():
            return int(num)
        raise UserError(f"{path}: expected an integer, got {value!r}")
    if t is float:
        if isinstance(value, bool):
            raise UserError(f"{path}: expected a number, got {value!r}")
        num = _as_number(value)
        if num is None or math.isnan(num):
            raise UserError(f"{path}: expected a number, got {value!r}")
        return float(num)
    if t is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{path}: expected a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{path}: expected a list, got {value!r}")
        return tuple(_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{path}: expected a list, got {value!r}")
        return [_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _coerce(f"{path}.{k}", v, args[1]) for k, v in value.items()}
    if t is Any:
        return value
    raise AssertionError(f"unsupported config type {t!r} at {path}")


def _as_number(value: Any) -> float | int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return None
    return None


def _fail(path: str, value: Any, allowed: str) -> None:
    raise UserError(f"{path}: {value!r} is out of range; allowed: {allowed}")


def _check_ranges(cfg: RunConfig) -> None:
    d, tok, m, tr, ev, sw, out = (cfg.data, cfg.tokenizer, cfg.model, cfg.train, cfg.eval,
                                  cfg.sweep, cfg.output)
    if not cfg.name:
        _fail("name", cfg.name, "a non-empty string")
    if d.source not in DATA_SOURCES:
        _fail("data.source", d.source, ", ".join(DATA_SOURCES))
    if d.source == "files" and not d.paths:
        raise UserError("data.paths: data.source is files but no paths are given; "
                        "set data.paths to files or globs (text, jsonl or parquet)")
    if d.validation_paths and d.source != "files":
        raise UserError(f"data.validation_paths: only for data.source files (this is "
                        f"{d.source}); an hf dataset names its split in data.validation_split")
    if d.source == "hf" and not d.path:
        raise UserError("data.path: data.source is hf but no dataset name is given, "
                        "e.g. data.path=wikitext data.name=wikitext-103-raw-v1")
    if d.max_bytes is not None and d.max_bytes < 1:
        _fail("data.max_bytes", d.max_bytes, "a positive number of bytes, or null")
    if not 0.0 < d.val_fraction < 0.5:
        _fail("data.val_fraction", d.val_fraction, "0 < val_fraction < 0.5")
    if d.synthetic_tokens < 1000:
        _fail("data.synthetic_tokens", d.synthetic_tokens, ">= 1000 words")
    if d.synthetic_val_tokens < 100:
        _fail("data.synthetic_val_tokens", d.synthetic_val_tokens, ">= 100 words")
    if not 2 <= d.synthetic_vocab <= 1_000_000:
        _fail("data.synthetic_vocab", d.synthetic_vocab, "2 to 1,000,000 words")
    if not 0.0 < d.synthetic_zipf <= 4.0:
        _fail("data.synthetic_zipf", d.synthetic_zipf, "0 < synthetic_zipf <= 4")
    if not 2 <= d.facts_keys <= 10_000_000:
        _fail("data.facts_keys", d.facts_keys, "2 to 10,000,000 facts")
    if not 1.0 < d.facts_zipf <= 4.0:
        _fail("data.facts_zipf", d.facts_zipf, "1 < facts_zipf <= 4 (a Zipf law with a finite "
              "tail sum)")
    for key, value, lo, hi in (("facts_syllables", d.facts_syllables, 2, 1000),
                               ("facts_values", d.facts_values, 2, 100_000),
                               ("facts_fillers", d.facts_fillers, 1, 100_000),
                               ("facts_filler_len", d.facts_filler_len, 0, 64)):
        if not lo <= value <= hi:
            _fail(f"data.{key}", value, f"{lo} to {hi:,}")

    if tok.kind not in TOKENIZER_KINDS:
        _fail("tokenizer.kind", tok.kind, ", ".join(TOKENIZER_KINDS))
    if tok.kind == "word":
        if tok.vocab_size is None or tok.vocab_size < WORD_SPECIALS + 1:
            _fail("tokenizer.vocab_size", tok.vocab_size,
                  f">= {WORD_SPECIALS + 1} for word (the distinct words + {WORD_SPECIALS} "
                  "specials)")
    elif tok.kind == "bpe":
        if tok.vocab_size is None or tok.vocab_size < BYTES_VOCAB_SIZE:
            _fail("tokenizer.vocab_size", tok.vocab_size,
                  f">= {BYTES_VOCAB_SIZE} for bpe (256 bytes + {len(SPECIAL_TOKENS)} special)")
        if tok.vocab_size is not None and tok.vocab_size > 2**32 - 1:
            _fail("tokenizer.vocab_size", tok.vocab_size, "< 2**32")
    elif tok.vocab_size not in (None, BYTES_VOCAB_SIZE):
        _fail("tokenizer.vocab_size", tok.vocab_size,
              f"null (or {BYTES_VOCAB_SIZE}) for kind bytes: 256 bytes + specials")
    if tok.min_frequency < 1:
        _fail("tokenizer.min_frequency", tok.min_frequency, ">= 1")

    if m.kind not in MODEL_KINDS:
        _fail("model.kind", m.kind, ", ".join(MODEL_KINDS))
    for key in ("embedding_dim", "hidden_dim", "num_layers"):
        v = getattr(m, key)
        if v < 1:
            _fail(f"model.{key}", v, "an integer >= 1")
    if m.kind == "transformer":
        if m.num_heads < 1 or m.hidden_dim % m.num_heads or (m.hidden_dim // m.num_heads) % 2:
            raise UserError(f"model.num_heads: {m.num_heads} must be >= 1 and divide "
                            f"model.hidden_dim ({m.hidden_dim}) into heads of even width "
                            f"(rotary positions rotate pairs)")
        ff = m.mlp_ratio * m.hidden_dim
        if not (m.mlp_ratio > 0 and math.isfinite(ff) and ff >= 1 and float(ff).is_integer()):
            raise UserError(f"model.mlp_ratio: {m.mlp_ratio!r} x hidden_dim {m.hidden_dim} = "
                            f"{ff:g} must be a whole number of MLP units >= 1")
    if not 0.0 <= m.dropout < 1.0:
        _fail("model.dropout", m.dropout, "0 <= dropout < 1")
    if m.tie_weights and m.embedding_dim != m.hidden_dim:
        raise UserError(f"model.tie_weights: true needs embedding_dim == hidden_dim, got "
                        f"embedding_dim={m.embedding_dim}, hidden_dim={m.hidden_dim}")
    if m.init not in ("default", "uniform"):
        _fail("model.init", m.init, "default or uniform")

    if tr.tokens < 1:
        _fail("train.tokens", tr.tokens, "a positive number of tokens")
    if tr.flops is not None and not (tr.flops > 0 and math.isfinite(tr.flops)):
        _fail("train.flops", tr.flops, "a positive FLOP budget, or null")
    for key in ("batch_size", "seq_len"):
        v = getattr(tr, key)
        if v < 1:
            _fail(f"train.{key}", v, "an integer >= 1")
    if tr.micro_batch_size is not None and not 1 <= tr.micro_batch_size <= tr.batch_size:
        _fail("train.micro_batch_size", tr.micro_batch_size,
              f"1 to train.batch_size ({tr.batch_size}), or null")
    if not (tr.lr > 0 and math.isfinite(tr.lr)):
        _fail("train.lr", tr.lr, "a positive, finite learning rate")
    if not 0.0 <= tr.min_lr_ratio <= 1.0:
        _fail("train.min_lr_ratio", tr.min_lr_ratio, "0 to 1")
    if not 0.0 <= tr.warmup_frac < 1.0:
        _fail("train.warmup_frac", tr.warmup_frac, "0 <= warmup_frac < 1")
    if tr.weight_decay < 0:
        _fail("train.weight_decay", tr.weight_decay, ">= 0")
    for key in ("beta1", "beta2"):
        v = getattr(tr, key)
        if not 0.0 <= v < 1.0:
            _fail(f"train.{key}", v, "0 <= beta < 1")
    if tr.grad_clip < 0:
        _fail("train.grad_clip", tr.grad_clip, ">= 0 (0 disables clipping)")
    if tr.precision not in ("auto", "fp32", "bf16", "fp16"):
        _fail("train.precision", tr.precision, "auto, fp32, bf16 or fp16")

    if ev.tokens < 1:
        _fail("eval.tokens", ev.tokens, "a positive number of tokens")
    if ev.every_tokens is not None and ev.every_tokens < 1:
        _fail("eval.every_tokens", ev.every_tokens, "a positive number of tokens, or null")
    if ev.batch_size is not None and ev.batch_size < 1:
        _fail("eval.batch_size", ev.batch_size, "an integer >= 1, or null")

    if sw.executor not in ("local", "slurm"):
        _fail("sweep.executor", sw.executor, "local or slurm")
    for i, b in enumerate(sw.budgets):
        if not (b > 0 and math.isfinite(b)):
            _fail(f"sweep.budgets[{i}]", b, "positive FLOP budgets")
    _check_slurm(sw.slurm)

    if out.log_every_steps < 1:
        _fail("output.log_every_steps", out.log_every_steps, ">= 1")
    if not out.checkpoint_every_minutes > 0:
        _fail("output.checkpoint_every_minutes", out.checkpoint_every_minutes, "> 0")
    if out.checkpoint_every_tokens is not None and out.checkpoint_every_tokens < 1:
        _fail("output.checkpoint_every_tokens", out.checkpoint_every_tokens, ">= 1, or null")
    if out.keep_checkpoints < 1:
        _fail("output.keep_checkpoints", out.keep_checkpoints,
              "an integer >= 1 (how many of the newest checkpoints to keep)")
    for i, tracker in enumerate(out.report_to):
        if tracker not in TRACKERS:
            raise UserError(f"output.report_to[{i}]: {tracker!r} is not a tracker; allowed: "
                            + ", ".join(f"{t} (pip install 'llmscale[{t}]')" for t in TRACKERS))


# sbatch options llmscale sets from its own keys (or needs as it sets them): `additional` may
# not set them, so one setting has one place.
_SBATCH_OWN = {"partition": "partition", "time": "time_min", "gpus-per-node": "gpus_per_run",
               "gres": "gpus_per_run", "gpus": "gpus_per_run", "ntasks-per-node": "tasks_per_run",
               "ntasks": "tasks_per_run", "cpus-per-task": "cpus_per_task", "mem": "mem_gb",
               "mem-per-cpu": "mem_gb", "mem-per-gpu": "mem_gb",
               "signal": "signal_delay_s", "account": "account", "qos": "qos",
               "constraint": "constraint", "array": "max_parallel", "nodes": None,
               "output": None, "error": None, "job-name": None, "open-mode": None,
               "wrap": None}


def _check_slurm(s: SlurmConfig) -> None:
    p = "sweep.slurm"
    if s.gpus_per_run < 0:
        _fail(f"{p}.gpus_per_run", s.gpus_per_run, ">= 0 (0: a CPU-only task)")
    if s.tasks_per_run is not None:
        if s.tasks_per_run < 1:
            _fail(f"{p}.tasks_per_run", s.tasks_per_run, ">= 1, or null")
        if s.gpus_per_run > 0 and s.tasks_per_run != s.gpus_per_run:
            _fail(f"{p}.tasks_per_run", s.tasks_per_run,
                  f"null or gpus_per_run ({s.gpus_per_run}): one process per GPU")
    if s.time_min < 1:
        _fail(f"{p}.time_min", s.time_min, ">= 1 minute")
    if s.cpus_per_task < 1:
        _fail(f"{p}.cpus_per_task", s.cpus_per_task, ">= 1")
    if s.mem_gb < 1:
        _fail(f"{p}.mem_gb", s.mem_gb, ">= 1 GB")
    if s.max_parallel is not None and s.max_parallel < 1:
        _fail(f"{p}.max_parallel", s.max_parallel, ">= 1, or null")
    if s.signal_delay_s is not None and not 0 < s.signal_delay_s < s.time_min * 60:
        _fail(f"{p}.signal_delay_s", s.signal_delay_s,
              f"1 to {s.time_min * 60 - 1} s (less than time_min, {s.time_min} min)")
    for key in ("partition", "account", "qos", "constraint"):
        v = getattr(s, key)
        if v is not None and (not v.strip() or any(c.isspace() for c in v)):
            _fail(f"{p}.{key}", v, "a non-empty name without spaces, or null")
    for i, line in enumerate(s.setup):
        if "\n" in line or "\r" in line:
            _fail(f"{p}.setup[{i}]", line, "one shell line per list item")
    for key, v in s.additional.items():
        opt = key.lstrip("-")
        if not opt or not all(c.isalnum() or c == "-" for c in opt) or opt != opt.lower():
            _fail(f"{p}.additional.{key}", v, "keys that are sbatch long options without "
                  "dashes, e.g. mail-type, exclusive, reservation")
        if opt in _SBATCH_OWN:
            own = _SBATCH_OWN[opt]
            raise UserError(f"{p}.additional.{key}: llmscale sets --{opt} itself"
                            + (f"; use {p}.{own}" if own else ""))
        if isinstance(v, str) and ("\n" in v or "\r" in v):
            _fail(f"{p}.additional.{key}", v, "a one-line value")
        if v is False:
            _fail(f"{p}.additional.{key}", v, "a value, or true for a flag (leave false out)")


def _to_plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so dicts round-trip through YAML and JSON unchanged."""
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------------------------
# Device names (`--device`, `--devices`): checked here, before torch is imported

DEVICE_NAMES = "auto, cpu, cuda, or cuda:N"


def check_device_name(name: str, flag: str = "--device") -> str:
    """The one check of a device name's form; returns it, or a UserError naming `flag`.

    Whether the device exists is llmscale.hardware.resolve_device's question, at run time.
    """
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise UserError(f"{flag} {name!r}: allowed: {DEVICE_NAMES}")
