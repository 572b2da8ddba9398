"""Planning a sweep: expand the `sweep` section into run configs, dedupe, apply FLOP budgets.

Pure: reads nothing from disk and imports no torch. Every planned run is a `SweepPoint`: its
resolved config, the swept keys and values that made it (`sweep_point`, a results.csv
column) and, for runs planned from `sweep.budgets`, the budget (`flops_budget`).
"""

from __future__ import annotations

import difflib
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmscale.accounting import run_accounting, tokens_for_flops
from llmscale.config import RunConfig, valid_keys, with_overrides
from llmscale.errors import UserError


def say(msg: str) -> None:
    """The sweep's console line (stderr): what a sweep plans, skips and finishes."""
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SweepPoint:
    """One planned run: the config, what the sweep set in it, and its FLOP budget if any."""

    cfg: RunConfig
    point: dict[str, Any]  # swept key -> value (grid, zip, runs, seeds, budgets, derived)
    flops_budget: float | None  # FLOPs: the planned train.flops (sweep.budgets, or swept)

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    @property
    def sweep_point(self) -> str | None:
        """The results.csv column: swept keys and values as JSON, keys sorted (None: the base
        run of a config without a sweep section)."""
        return json.dumps(self.point, sort_keys=True) if self.point else None


def plan_points(cfg: RunConfig, *, log: Callable[[str], None] = say) -> list[SweepPoint]:
    """Every run of the sweep: base config x (grid x zip x runs x seeds x budgets), then derived.

    Runs resolving to the same run_id are kept once (the first), and a log line says how many
    were dropped. A config without a sweep section is a one-run sweep (the base run).
    """
    points = expand_points(cfg)
    derived = check_derived(cfg.sweep.derived)
    budgets = cfg.sweep.budgets
    out: list[SweepPoint] = []
    seen: set[str] = set()
    for i, point in enumerate(points):
        run = _apply(cfg, point, derived, where=f"sweep point {i} {show(point)}")
        if "train.flops" in point:
            run = _with_budget(run, point, budgets)
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        swept = dict(point)
        swept.update({target: _get(run, target) for target, _ in derived})
        # the planned budget (sweep.budgets, or train.flops set in the grid, zip, runs or the
        # base config), not the FLOPs achieved after rounding to whole tokens
        out.append(SweepPoint(cfg=run, point=swept, flops_budget=run.train.flops))
    if len(out) < len(points):
        log(f"sweep {cfg.name!r}: {len(points) - len(out)} of {len(points)} sweep points resolve "
            f"to a run_id already planned (identical resolved configs); each is run once "
            f"({len(out)} runs)")
    return out


def plan_sweep(cfg: RunConfig, *, log: Callable[[str], None] = say) -> list[RunConfig]:
    """The run configs of `plan_points`, in plan order."""
    return [p.cfg for p in plan_points(cfg, log=log)]


def _check_key(section: str, key: str) -> None:
    keys = set(valid_keys())
    if key not in keys:
        close = difflib.get_close_matches(key, sorted(keys), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"sweep.{section}: unknown config key {key!r}{hint} "
                        f"(keys are dotted paths such as model.hidden_dim or train.lr)")
    if key.startswith("sweep.") or key == "name":
        raise UserError(f"sweep.{section}: {key!r} cannot be swept (it does not change a run)")


def _check_axes(cfg: RunConfig) -> None:
    sw = cfg.sweep
    for key, values in sw.grid.items():
        _check_key("grid", key)
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep.grid.{key}: expected a non-empty list of values, got {values!r}")
    zip_len = None
    for key, values in sw.zip.items():
        _check_key("zip", key)
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep.zip.{key}: expected a non-empty list of values, got {values!r}")
        if zip_len is not None and len(values) != zip_len:
            lens = ", ".join(f"{k}: {len(v)}" for k, v in sw.zip.items())
            raise UserError(f"sweep.zip: paired axes must have equal lengths, got {lens}")
        zip_len = len(values)
    for i, run in enumerate(sw.runs):
        if not isinstance(run, dict) or not run:
            raise UserError(f"sweep.runs[{i}]: expected a non-empty mapping of key: value, "
                            f"got {run!r}")
        for key in run:
            _check_key(f"runs[{i}]", str(key))
    if "train.seed" in sw.grid and sw.seeds:
        raise UserError("sweep.seeds and sweep.grid.train.seed both set the seed; keep one")
    if sw.budgets and ("train.flops" in sw.grid or "train.tokens" in sw.grid):
        raise UserError("sweep.budgets sets train.flops and train.tokens; do not also grid them")


def expand_points(cfg: RunConfig) -> list[dict[str, Any]]:
    """The override dicts, one per sweep point, before derived values and budgets."""
    _check_axes(cfg)
    sw = cfg.sweep
    # grid (cartesian) x zip (paired rows) x runs (explicit) x seeds x budgets
    grid_keys = list(sw.grid)
    axes: list[list[dict[str, Any]]] = [
        [dict(zip(grid_keys, combo, strict=True)) for combo in itertools.product(*sw.grid.values())]]
    if sw.zip:
        zip_keys = list(sw.zip)
        axes.append([dict(zip(zip_keys, row, strict=True))
                     for row in zip(*sw.zip.values(), strict=True)])
    if sw.runs:
        axes.append([{str(k): v for k, v in run.items()} for run in sw.runs])
    if sw.seeds:
        axes.append([{"train.seed": s} for s in sw.seeds])
    if sw.budgets:
        axes.append([{"train.flops": float(b)} for b in sw.budgets])
    points = []
    for parts in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in parts:
            point.update(part)  # later axes win: an explicit run overrides the grid
        points.append(point)
    return points


def check_derived(derived: dict[str, str]) -> list[tuple[str, str]]:
    keys = set(valid_keys())
    for target, source in derived.items():
        for what, key in (("key", target), ("source", source)):
            if not isinstance(key, str) or key not in keys:
                raise UserError(f"sweep.derived: unknown {what} {key!r} in "
                                f"{target}: {source} (both sides are dotted config keys, "
                                f"e.g. model.embedding_dim: model.hidden_dim)")
    return list(derived.items())


def _get(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return list(node) if isinstance(node, tuple) else node


def _apply(base: RunConfig, point: dict[str, Any], derived: list[tuple[str, str]],
           where: str) -> RunConfig:
    """Overrides first, then each derived key copies its source's final value (in order)."""
    try:
        run = with_overrides(base, point)
        for target, source in derived:
            run = with_overrides(run, {target: _get(run, source)})
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return run


def _with_budget(run: RunConfig, point: dict[str, Any], budgets: list[float]) -> RunConfig:
    """A FLOP budget buys this shape tokens_for_flops tokens; at least one batch is required."""
    flops = run.train.flops  # the config's coerced value (YAML reads 1e6 as a string)
    assert flops is not None
    tokens = tokens_for_flops(run.vocab_size, run.model, flops, seq_len=run.train.seq_len)
    batch_tokens = run.train.batch_size * run.train.seq_len
    if tokens < batch_tokens:
        where = (f"sweep.budgets[{[float(b) for b in budgets].index(flops)}]"
                 if flops in [float(b) for b in budgets] else "train.flops")
        raise UserError(
            f"{where}: {flops:.3g} FLOPs buys {tokens:,} tokens for "
            f"{shape(run)} ({show(point)}), less than one batch "
            f"(train.batch_size x train.seq_len = {batch_tokens:,} tokens); "
            f"raise the budget to >= {batch_tokens * run_accounting(run).flops_per_token:.3g}")
    # train.tokens mirrors the accounting so the plan, the record and the trainer agree.
    return with_overrides(run, {"train.tokens": tokens})


def show(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in point.items()) + "}"


def shape(run: RunConfig) -> str:
    m = run.model
    kind = "" if m.kind == "lstm" else f"{m.kind} "
    emb = "" if m.embedding_dim == m.hidden_dim else f" e{m.embedding_dim}"
    return f"{kind}h{m.hidden_dim} l{m.num_layers}{emb}"


def run_dir_name(run: RunConfig) -> str:
    """`h128-l2-3f9a0c1e2b4d`: readable shape first, the run_id makes it unique. Kinds other
    than the founding LSTM lead the name (`transformer-h128-l2-...`)."""
    m = run.model
    kind = "" if m.kind == "lstm" else f"{m.kind}-"
    emb = "" if m.embedding_dim == m.hidden_dim else f"-e{m.embedding_dim}"
    return f"{kind}h{m.hidden_dim}-l{m.num_layers}{emb}-{run.run_id}"
