"""RunRecord: one row of results.csv. Its fields *are* the columns, in this order.

Writes go through `upsert_record`: under a file lock, read the table, replace or add the
row with the same run_id, write a temp file and rename it over the old one. So concurrent
workers (processes, or nodes on a shared filesystem) never lose or duplicate a row, and a
crash mid-write leaves the previous table intact.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from filelock import FileLock

from llmscale.atomic import atomic_write_text
from llmscale.layout import RESULTS_FILE, lock_path

__all__ = ["COLUMNS", "RESULTS_FILE", "STATUSES", "RunRecord", "read_results", "upsert_record",
           "write_json", "read_record_json", "record_from_row", "atomic_write_text"]

# A record is written when a run ends; these are the ways it can end.
STATUSES = ("completed", "diverged", "oom", "failed", "preempted")


@dataclass
class RunRecord:
    # identity
    run_id: str = ""
    sweep: str = ""  # the config's name
    status: str = ""  # one of STATUSES
    # shape and optimisation
    vocab_size: int | None = None
    embedding_dim: int | None = None
    hidden_dim: int | None = None
    num_layers: int | None = None
    dropout: float | None = None
    tie_weights: bool | None = None
    seq_len: int | None = None  # tokens
    batch_size: int | None = None  # sequences per optimizer step, global
    lr: float | None = None  # peak
    seed: int | None = None
    # accounting (llmscale.accounting; tokens and flops are those actually trained)
    params_total: int | None = None
    params_embedding: int | None = None
    params_nonembedding: int | None = None
    flops_per_token: int | None = None  # training FLOPs per token
    tokens: int | None = None  # training tokens processed
    flops: float | None = None  # flops_per_token x tokens
    # losses (nats per token, bits per UTF-8 byte)
    train_loss: float | None = None  # mean over the last ~5% of steps
    val_loss: float | None = None
    val_ppl: float | None = None
    val_bpb: float | None = None
    # cost, measured: GPU count (S), wall time (R), checkpoint size (T)
    gpu_count: int | None = None  # GPUs used; 0 on CPU
    device_name: str | None = None
    world_size: int | None = None  # processes (DDP ranks)
    wall_time_s: float | None = None  # seconds, the whole run: set-up, steps, evals, checkpoints
    gpu_hours: float | None = None  # gpu_count x wall_time_s / 3600
    tokens_per_s: float | None = None  # tokens / train_time_s, all ranks
    mfu: float | None = None  # model FLOP/s (over train_time_s) / peak_flops
    peak_memory_bytes: int | None = None  # this run's peak: CUDA allocated; CPU resident set
    checkpoint_bytes: int | None = None  # one checkpoint's safetensors weights file (T)
    # provenance
    torch_version: str | None = None
    git_commit: str | None = None
    config_hash: str | None = None
    started_at: str | None = None  # ISO 8601, UTC
    finished_at: str | None = None
    # the time split of wall_time_s, seconds (summed over resumed calls)
    setup_s: float | None = None  # call start to first optimizer step: data, model, resume
    train_time_s: float | None = None  # optimizer steps (and per-step logging)
    eval_time_s: float | None = None  # held-out evaluations
    checkpoint_time_s: float | None = None  # checkpoint writes
    # what was run and why
    model_kind: str = "lstm"  # lstm | gru | transformer
    flops_budget: float | None = None  # the planned FLOP budget (sweep.budgets), not achieved
    sweep_point: str | None = None  # the swept keys and their values, JSON
    run_dir: str | None = None  # the run directory (relative to the sweep directory in sweeps)
    # extras (after the DESIGN.md columns, so the documented order stays stable)
    data_source: str | None = None  # synthetic | facts | files | hf
    tokenizer_kind: str | None = None  # bpe | bytes | word
    val_bytes_per_token: float | None = None  # UTF-8 bytes per validation token
    data_entropy_bpb: float | None = None  # synthetic source: true entropy rate, bits/byte
    peak_flops: float | None = None  # FLOP/s the mfu is measured against
    peak_flops_source: str | None = None  # where peak_flops comes from
    peak_memory_reserved_bytes: int | None = None  # CUDA: peak held by the caching allocator
    error: str | None = None  # why a run is not completed
    # disk the run's checkpoints take: every file of each checkpoint kept (at most
    # output.keep_checkpoints of them; weights, trainer state, manifest), bytes
    checkpoint_disk_bytes: int | None = None
    # facts source: the exponents its mechanism predicts (llmscale.data.facts), a - 1 and (a - 1)/a
    data_theory_alpha: float | None = None
    data_theory_beta: float | None = None

    def to_row(self) -> dict[str, str]:
        return {f.name: _format(getattr(self, f.name)) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))
_TYPES: dict[str, str] = {}


def _column_types() -> dict[str, str]:
    if not _TYPES:
        import typing

        for name, t in typing.get_type_hints(RunRecord).items():
            args = [a for a in typing.get_args(t) if a is not type(None)] or [t]
            _TYPES[name] = args[0].__name__
    return _TYPES


def _format(v: Any) -> str:
    if v is None:
        return ""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()  # numpy / torch scalars: repr(np.float64(1.0)) would not read back
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def _parse(name: str, text: str) -> Any:
    if text == "":
        return None
    kind = _column_types().get(name, "str")
    if kind == "int":
        return int(float(text)) if any(c in text for c in ".eE") else int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    return text


def record_from_row(row: dict[str, str]) -> RunRecord:
    """A record from a CSV row; columns an older schema lacks stay None, unknown ones are ignored."""
    kwargs = {}
    for name in COLUMNS:
        if name in row and row[name] is not None:
            kwargs[name] = _parse(name, row[name])
    if not kwargs.get("run_id"):
        raise ValueError("empty run_id")
    return RunRecord(**kwargs)


def read_results(path: str | Path) -> tuple[list[RunRecord], list[str]]:
    """All parseable rows, and one message per row that could not be read (kept out)."""
    p = Path(path)
    if not p.exists():
        return [], []
    records: list[RunRecord] = []
    problems: list[str] = []
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return [], []
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                problems.append(f"{p}:{line}: wrong number of fields; row skipped")
                continue
            try:
                records.append(record_from_row(row))
            except (ValueError, TypeError) as e:
                problems.append(f"{p}:{line}: {e}; row skipped")
    return records, problems


def _render(records: list[RunRecord]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow(r.to_row())
    return buf.getvalue()


def results_lock(path: str | Path) -> FileLock:
    return FileLock(str(lock_path(path)))


def upsert_record(path: str | Path, record: RunRecord) -> list[str]:
    """Add `record` to the table at `path`, replacing the row with its run_id if there is one.

    Returns the problems found reading the existing table (corrupt rows are reported and
    dropped from the rewritten file, which keeps a copy of the old one as results.csv.bak).
    """
    p = Path(path)
    with results_lock(p):
        records, problems = read_results(p)
        if problems:
            # Keep the unreadable original for the user before it is rewritten without them.
            atomic_write_text(p.with_suffix(p.suffix + ".bak"), p.read_text(encoding="utf-8",
                                                                             errors="replace"))
        out = [r for r in records if r.run_id != record.run_id]
        out.append(record)
        atomic_write_text(p, _render(out))
    return problems


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_record_json(path: str | Path) -> RunRecord:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    return RunRecord(**{k: v for k, v in d.items() if k in COLUMNS})
