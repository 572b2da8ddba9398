"""Checkpoints that cannot tear: one directory per checkpoint, the last K kept, a bad one skipped.

Layout under a run directory (names in llmscale.layout):

    checkpoint/step-<N>/weights.safetensors  the model's tensors (fp32) by parameter name; its
                                             metadata holds run_id and step
    checkpoint/step-<N>/trainer_state.pt     optimizer, schedule position, RNG states, data step,
                                             carried state, metrics so far (plain types and
                                             tensors: loads with torch.load(weights_only=True))
    checkpoint/step-<N>/manifest.json        run_id, step, and each file's bytes and sha256

Writing (`save_checkpoint`): the files go into a fresh `step-<N>.tmp/`, the files and the
directory are fsynced, and one rename makes `step-<N>/` appear. A step directory is whole by
construction: a crash anywhere before the rename leaves a `.tmp` that the next save removes,
and the checkpoints before it untouched. Then the oldest are pruned to the newest K
(`output.keep_checkpoints`); each is renamed to `.del` before it is deleted, so a prune cut
short never leaves a half-deleted directory under a complete name.

The latest checkpoint is the highest N among the step directories. There is no `latest`
pointer file: the directory names are the one source of truth, and a pointer would be a
second one, which a crash between the rename and the pointer's update leaves stale, so the
reader would have to check it against the directories anyway.

Reading (`load_checkpoint`), newest first: a checkpoint is used only when it is whole and a
pair. The manifest's sizes and sha256 must match the files (this catches truncation, and
corruption that the formats do not notice: neither safetensors nor torch's zip checks its
tensor bytes), both files must load, and the weights' metadata (run_id, step) must agree with
the trainer state's and with N. One that fails is skipped, with its reason, and the next older
one is tried: the run resumes from that one exactly as if it had been preempted at its step.
Only when none is usable does loading stop, with one line naming each file and why. A resuming
run sets the skipped ones aside as `step-<N>.bad/` (`set_aside_skipped`: kept for inspection,
never read again, not counted among the K kept), so that they cannot take the place of good
checkpoints when the oldest are pruned; `eval` and `sample` only read, and leave them.

The old layout (`checkpoint/weights.safetensors` beside `checkpoint/trainer_state.pt`, one
checkpoint written file by file) is still read, as the oldest candidate, with the same pair
check (it has no manifest). It is never written, and is pruned like any other checkpoint once
K step directories exist.

Test hook: llmscale.faults.point marks each step of the save sequence (LLMSCALE_TEST_KILL_AT).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llmscale import faults
from llmscale.atomic import remove_dir, rename_dir, seal_dir
from llmscale.errors import UserError
from llmscale.layout import (
    BAD_SUFFIX,
    CHECKPOINT_DIR,
    DEL_SUFFIX,
    MANIFEST_FILE,
    STATE_FILE,
    STEP_PREFIX,
    TMP_SUFFIX,
    WEIGHTS_FILE,
    checkpoint_dir,
    parse_step,
    step_dir,
)

__all__ = ["CHECKPOINT_DIR", "STATE_FILE", "WEIGHTS_FILE", "MANIFEST_FILE", "Checkpoint",
           "checkpoint_dir", "latest_dir", "weights_path", "state_path", "has_checkpoint",
           "model_tensors", "save_checkpoint", "load_checkpoint", "load_weights",
           "apply_weights", "kept_bytes", "set_aside_skipped"]

DEFAULT_KEEP = 2  # output.keep_checkpoints: the newest and one to fall back to


# ------------------------------------------------------------------------------------------
# Finding checkpoints (names only; nothing is read)


@dataclass(frozen=True)
class _Candidate:
    """A checkpoint on disk, not yet checked: a step directory, or the old layout's pair."""

    path: Path  # checkpoint/step-<N>, or checkpoint/ itself for the old layout
    step: int | None  # N from the name; None for the old layout (its step is inside)

    @property
    def prefix(self) -> str:
        """How messages name its files: `step-<N>/weights.safetensors`, or the bare name."""
        return f"{self.path.name}/" if self.step is not None else ""

    @property
    def label(self) -> str:
        return self.path.name if self.step is not None else "the old-layout checkpoint"


def _step_dirs(ck: Path) -> list[_Candidate]:
    """The complete step directories under `ck` (checkpoint/), newest first."""
    if not ck.is_dir():
        return []
    found = [_Candidate(p, n) for p in ck.iterdir()
             if (n := parse_step(p.name)) is not None and p.is_dir()]
    return sorted(found, key=lambda c: c.step, reverse=True)


def _candidates(run_dir: str | Path, *, need_state: bool) -> list[_Candidate]:
    """Every checkpoint worth trying, newest first: the step directories, then the old layout
    (which counts only when its files are there: the old code wrote the weights first, so
    weights without a trainer state were a save cut short, never a checkpoint)."""
    ck = checkpoint_dir(run_dir)
    found = _step_dirs(ck)
    if (ck / WEIGHTS_FILE).is_file() and (not need_state or (ck / STATE_FILE).is_file()):
        found.append(_Candidate(ck, None))
    return found


def has_checkpoint(run_dir: str | Path) -> bool:
    """True when `run_dir` holds a checkpoint to resume from (not yet checked: a resume checks)."""
    return bool(_candidates(run_dir, need_state=True))


def latest_dir(run_dir: str | Path) -> Path | None:
    """The newest checkpoint's directory (not checked), or None: for readers of single files."""
    found = _candidates(run_dir, need_state=True)
    return found[0].path if found else None


def weights_path(run_dir: str | Path) -> Path | None:
    """The newest checkpoint's weights file (not checked), or None when there is none."""
    d = latest_dir(run_dir)
    return d / WEIGHTS_FILE if d is not None else None


def state_path(run_dir: str | Path) -> Path | None:
    """The newest checkpoint's trainer state file (not checked), or None when there is none."""
    d = latest_dir(run_dir)
    return d / STATE_FILE if d is not None else None


def kept_bytes(run_dir: str | Path) -> int:
    """Bytes on disk of every checkpoint kept (all files of each): what keeping K costs. Not
    counted: `.bad` directories a resume set aside, and `.tmp`/`.del` ones in flight."""
    total = 0
    for c in _candidates(run_dir, need_state=False):
        files = (list(c.path.iterdir()) if c.step is not None  # a step directory: all of it
                 else [c.path / WEIGHTS_FILE, c.path / STATE_FILE])  # the old layout's pair
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total


# ------------------------------------------------------------------------------------------
# Writing


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors for safetensors: contiguous CPU copies, shared (tied) ones once.

    safetensors refuses tensors that share storage, and tied weights do; `state_dict(keep_vars)`
    would list the tied matrix under two names, so we keep the first name of each parameter
    (the same dedupe `named_parameters` does) and restore the tie by loading with strict=False.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        out[name] = t.detach().to("cpu", copy=True).contiguous()
    return out


def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, state: dict[str, Any], *,
                    keep: int = DEFAULT_KEEP) -> Path:
    """Write `checkpoint/step-<state['step']>/` as one unit, then keep only the newest `keep`.
    Returns the new step directory. `state` is the trainer state (it names run_id and step)."""
    assert keep >= 1, keep
    step, run_id = int(state["step"]), str(state["run_id"])
    ck = checkpoint_dir(run_dir)
    ck.mkdir(parents=True, exist_ok=True)
    # We are the run's one writer (a sweep claims the run), so anything in flight is a leftover:
    # a save that died before its rename (.tmp) or a prune that died mid-delete (.del).
    for p in ck.iterdir():
        if p.name.startswith(STEP_PREFIX) and p.name.endswith((TMP_SUFFIX, DEL_SUFFIX)):
            shutil.rmtree(p)
    # A run never saves a step twice and resumes from its newest usable checkpoint, setting
    # aside the unusable ones past it: so a directory at this step or past it did not come
    # from this run's resume (copied in by hand?). Set it aside too, rather than fail the
    # rename below on it or let it outrank the checkpoint being written.
    for c in _step_dirs(ck):
        if c.step >= step:
            _set_aside(c.path)

    tmp = ck / f"{STEP_PREFIX}{step}{TMP_SUFFIX}"
    tmp.mkdir()
    faults.point("ckpt-start")
    save_file(model_tensors(model), str(tmp / WEIGHTS_FILE),
              metadata={"run_id": run_id, "step": str(step)})
    faults.point("ckpt-weights")
    torch.save(state, tmp / STATE_FILE)
    faults.point("ckpt-state")
    manifest = {"run_id": run_id, "step": step,
                "files": {name: {"bytes": (tmp / name).stat().st_size,
                                 "sha256": _sha256(tmp / name)}
                          for name in (WEIGHTS_FILE, STATE_FILE)}}
    with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    seal_dir(tmp)
    faults.point("ckpt-rename")
    final = step_dir(run_dir, step)
    rename_dir(tmp, final)  # the commit: from here the checkpoint exists, whole
    faults.point("ckpt-renamed")
    _prune(ck, keep)
    return final


def _prune(ck: Path, keep: int) -> None:
    """Delete all but the newest `keep` step directories (and the old layout's pair, once
    `keep` step directories exist)."""
    steps = _step_dirs(ck)
    for c in steps[keep:]:
        remove_dir(c.path, DEL_SUFFIX)  # a delete cut short leaves a .del, not a torn step-<N>
    if len(steps) >= keep:
        for name in (STATE_FILE, WEIGHTS_FILE):  # the state first: then it is no candidate
            (ck / name).unlink(missing_ok=True)


def set_aside_skipped(ck: Checkpoint) -> None:
    """Rename the checkpoints `load_checkpoint` skipped to `step-<N>.bad/`: out of the K kept
    and never read again (a resuming run calls this; they stay on disk for inspection). Safe
    while other DDP ranks are still loading: they would skip those directories too."""
    for d in ck.skipped_dirs:
        if d.exists():
            _set_aside(d)


def _set_aside(path: Path) -> None:
    bad = path.with_name(path.name + BAD_SUFFIX)
    if bad.exists():  # set aside before, at the same step: the newer one is the one to keep
        remove_dir(bad, DEL_SUFFIX)
    rename_dir(path, bad)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Checkpoint:
    """A checked checkpoint, loaded: what a resume (or `eval`) uses."""

    path: Path  # its directory: checkpoint/step-<N>, or checkpoint/ for the old layout
    step: int  # optimizer steps done
    tensors: dict[str, torch.Tensor]  # the weights, by parameter name (tied ones once)
    state: dict[str, Any] | None  # the trainer state; None when loaded with state=False
    skipped: tuple[str, ...]  # why each newer checkpoint was passed over (naming its file)
    skipped_dirs: tuple[Path, ...] = ()  # their directories (only step directories are newer)

    def warning(self, then: str = "") -> str | None:
        """The one `warning:` line for the newer checkpoints skipped (None when none was);
        `then` says what the caller does about them."""
        if not self.skipped:
            return None
        where = self.path.parent if self.path.name.startswith(STEP_PREFIX) else self.path
        return (f"warning: skipped {len(self.skipped)} unusable checkpoint(s) in {str(where)!r}: "
                f"{'; '.join(self.skipped)}; using {self.path.name} (step {self.step})"
                f"{'; ' + then if then else ''}")


class _Unusable(Exception):
    """Why one checkpoint cannot be used, in one line naming the file."""


def load_checkpoint(run_dir: str | Path, run_id: str | None, *,
                    state: bool = True) -> Checkpoint | None:
    """The newest usable checkpoint of `run_dir`, or None when there is none at all.

    `run_id`: a usable checkpoint of another run is a UserError (runs are never mixed); None
    skips that check. `state=False` loads and checks the weights alone (eval, sample), which
    spares reading the optimizer's moments. A UserError, one line, when checkpoints exist but
    none is usable."""
    found = _candidates(run_dir, need_state=state)
    if not found:
        return None
    skipped: list[str] = []
    skipped_dirs: list[Path] = []
    for c in found:
        try:
            tensors, st, step = _load(c, state)
        except _Unusable as why:
            skipped.append(str(why))
            skipped_dirs.append(c.path)
            continue
        if run_id is not None and st is not None and st["run_id"] != run_id:
            raise UserError(f"{str(c.path)!r} is a checkpoint of run {st['run_id']}, not "
                            f"{run_id}; use another --out directory (runs are never mixed)")
        return Checkpoint(path=c.path, step=step, tensors=tensors, state=st,
                          skipped=tuple(skipped), skipped_dirs=tuple(skipped_dirs))
    ck = checkpoint_dir(run_dir)
    raise UserError(f"no usable checkpoint in {str(ck)!r}: {'; '.join(skipped)}; move that "
                    f"directory away to start the run afresh")


def _load(c: _Candidate, with_state: bool) -> tuple[dict[str, torch.Tensor],
                                                     dict[str, Any] | None, int]:
    names = (WEIGHTS_FILE, STATE_FILE) if with_state else (WEIGHTS_FILE,)
    if c.step is not None:  # a step directory: whole, by its manifest
        _check_manifest(c, names)
    meta, tensors = _read_weights(c)
    w_run, w_step = meta.get("run_id"), meta.get("step")
    if c.step is not None and w_step != str(c.step):
        raise _Unusable(f"{c.prefix}{WEIGHTS_FILE} is of step {w_step}, not the directory's")
    if not with_state:
        if c.step is None and not (w_step or "").isdigit():
            raise _Unusable(f"{WEIGHTS_FILE} names no step in its metadata")
        return tensors, None, c.step if c.step is not None else int(w_step)
    st = _read_state(c)
    # The pair check: weights and trainer state are of one run and one step, or neither is used.
    if (w_run, w_step) != (str(st["run_id"]), str(st["step"])):
        raise _Unusable(f"{c.prefix}{WEIGHTS_FILE} (run {w_run}, step {w_step}) and "
                        f"{c.prefix}{STATE_FILE} (run {st['run_id']}, step {st['step']}) are "
                        f"not one checkpoint (a torn pair)")
    return tensors, st, int(st["step"])


def _check_manifest(c: _Candidate, names: tuple[str, ...]) -> None:
    m = c.path / MANIFEST_FILE
    try:
        manifest = json.loads(m.read_text(encoding="utf-8"))
        files = {n: (int(manifest["files"][n]["bytes"]), str(manifest["files"][n]["sha256"]))
                 for n in names}
        step = manifest["step"]
    except FileNotFoundError:
        raise _Unusable(f"{c.prefix}{MANIFEST_FILE} is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _Unusable(f"{c.prefix}{MANIFEST_FILE} is unreadable ({_short(e)})") from None
    if step != c.step:
        raise _Unusable(f"{c.prefix}{MANIFEST_FILE} is of step {step!r}, not the directory's")
    for name, (size, digest) in files.items():
        f = c.path / name
        if not f.is_file():
            raise _Unusable(f"{c.prefix}{name} is missing")
        if f.stat().st_size != size:
            raise _Unusable(f"{c.prefix}{name} has {f.stat().st_size} bytes, its manifest says "
                            f"{size} (truncated or overwritten)")
        if _sha256(f) != digest:
            raise _Unusable(f"{c.prefix}{name} does not match its sha256 in {MANIFEST_FILE} "
                            f"(corrupted or replaced)")


def _read_weights(c: _Candidate) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    p = c.path / WEIGHTS_FILE
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same problem
        raise _Unusable(f"{c.prefix}{WEIGHTS_FILE} is unreadable ({_short(e)})") from None
    return meta, tensors


def _read_state(c: _Candidate) -> dict[str, Any]:
    p = c.path / STATE_FILE
    try:
        st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same problem
        raise _Unusable(f"{c.prefix}{STATE_FILE} is unreadable ({_short(e)})") from None
    if not isinstance(st, dict) or "run_id" not in st or "step" not in st:
        raise _Unusable(f"{c.prefix}{STATE_FILE} is not a trainer state (no run_id and step)")
    return st


def _short(e: BaseException) -> str:
    """An exception as a short single line (torch's messages run to several)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def apply_weights(model: torch.nn.Module, ck: Checkpoint) -> None:
    """Copy the checkpoint's weights into `model` in place (tied weights stay tied); a
    UserError when they are not this model's shape."""
    expected = model_tensors(model)
    if set(ck.tensors) != set(expected) or any(ck.tensors[k].shape != expected[k].shape
                                               for k in expected):
        raise UserError(f"checkpoint weights in {str(ck.path)!r} do not match this run's model "
                        f"shape; use another --out directory, or move that one away")
    with torch.no_grad():
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        for name, t in ck.tensors.items():
            params[name].copy_(t)


def load_weights(run_dir: str | Path, model: torch.nn.Module) -> Checkpoint:
    """Load the newest usable checkpoint's weights into `model` (its trainer state is not read);
    returns the checkpoint (its `warning()` says what was skipped). A UserError when there is
    none, none is usable, or the shapes are not the model's."""
    ck = load_checkpoint(run_dir, None, state=False)
    if ck is None:
        raise UserError(f"{str(run_dir)!r} has no checkpoint ({CHECKPOINT_DIR}/"
                        f"{STEP_PREFIX}<N>/{WEIGHTS_FILE})")
    apply_weights(model, ck)
    return ck
