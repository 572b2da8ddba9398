"""Sweep planning, the dry-run table and bad input: no training (fast)."""

from __future__ import annotations

import pytest

from llmscale.accounting import run_accounting, tokens_for_flops
from llmscale.cli import main
from llmscale.cli.status import format_status
from llmscale.config import from_dict
from llmscale.errors import UserError
from llmscale.records import RunRecord, read_results, upsert_record
from llmscale.sweep import claim_sweep_dir, plan_sweep, planned_run_ids, run_dir_name, sweep_state

BASE = {
    "name": "t",
    "data": {"source": "synthetic", "synthetic_tokens": 2000, "synthetic_val_tokens": 200,
             "synthetic_vocab": 64},
    "tokenizer": {"kind": "bytes", "vocab_size": None},
    "model": {"embedding_dim": 8, "hidden_dim": 8, "num_layers": 1},
    "train": {"tokens": 2048, "batch_size": 4, "seq_len": 16},
    "eval": {"tokens": 256},
}


def cfg_with(sweep: dict, **sections) -> object:
    raw = {**BASE, **sections, "sweep": sweep}
    return from_dict(raw)


def test_grid_zip_runs_seeds_derived_expand_as_a_product():
    cfg = cfg_with({
        "grid": {"model.hidden_dim": [8, 16, 32], "train.lr": [1e-3, 3e-3]},
        "zip": {"model.num_layers": [1, 2], "train.batch_size": [4, 8]},
        "seeds": [0, 1],
        "derived": {"model.embedding_dim": "model.hidden_dim"},
    })
    runs = plan_sweep(cfg)
    assert len(runs) == 3 * 2 * 2 * 2
    combos = {(r.model.hidden_dim, r.train.lr, r.model.num_layers, r.train.batch_size,
               r.train.seed) for r in runs}
    assert len(combos) == 24
    # zip pairs its axes, it does not cross them
    assert {(r.model.num_layers, r.train.batch_size) for r in runs} == {(1, 4), (2, 8)}
    # derived copies the final value of its source
    assert all(r.model.embedding_dim == r.model.hidden_dim for r in runs)
    assert len({r.run_id for r in runs}) == 24
    assert {run_dir_name(r).rsplit("-", 1)[0] for r in runs} >= {"h8-l1", "h32-l2"}


def test_budgets_across_model_kinds_and_their_run_dir_names():
    cfg = cfg_with({"budgets": [1e9], "grid": {"model.kind": ["lstm", "gru", "transformer"]},
                    "derived": {"model.embedding_dim": "model.hidden_dim"}})
    runs = plan_sweep(cfg)
    names = sorted(run_dir_name(r).rsplit("-", 1)[0] for r in runs)
    assert names == ["gru-h8-l1", "h8-l1", "transformer-h8-l1"]
    # the transformer's FLOPs per token include attention over train.seq_len
    for r in runs:
        acc = run_accounting(r)
        assert acc.tokens == r.train.tokens and acc.flops <= 1e9 < acc.flops + acc.flops_per_token


def test_explicit_runs_override_the_grid():
    cfg = cfg_with({"grid": {"model.hidden_dim": [8, 16]},
                    "runs": [{"train.lr": 0.01}, {"train.lr": 0.02, "model.hidden_dim": 32}]})
    runs = plan_sweep(cfg)
    got = sorted((r.model.hidden_dim, r.train.lr) for r in runs)
    # (8, .02) and (16, .02) both become (32, .02): deduped
    assert got == [(8, 0.01), (16, 0.01), (32, 0.02)]


def test_each_planned_run_knows_its_sweep_point_and_flops_budget(tmp_path):
    import json

    from llmscale.sweep import plan_points, planned_run
    from llmscale.sweep.state import table_record

    cfg = cfg_with({"grid": {"model.hidden_dim": [8, 16]}, "budgets": [1e8, 3e8],
                    "derived": {"model.embedding_dim": "model.hidden_dim"}})
    points = plan_points(cfg)
    assert sorted(p.flops_budget for p in points) == [1e8, 1e8, 3e8, 3e8]
    for p in points:
        swept = json.loads(p.sweep_point)
        assert swept == {"model.hidden_dim": p.cfg.model.hidden_dim, "train.flops": p.flops_budget,
                         "model.embedding_dim": p.cfg.model.hidden_dim}
        # the achieved FLOPs round down to whole tokens: the budget column keeps the plan's
        assert run_accounting(p.cfg).flops <= p.flops_budget
    # the table's row: run_dir relative to the sweep directory, the plan's columns filled
    rec = table_record(RunRecord(run_id=points[0].run_id, run_dir="/abs/elsewhere"),
                       planned_run(tmp_path, points[0]), tmp_path)
    assert rec.run_dir == f"runs/{run_dir_name(points[0].cfg)}"
    assert rec.flops_budget == 1e8 and rec.sweep_point == points[0].sweep_point
    # train.flops paired with widths in a zip (as configs/quickstart.yaml does) is a budget too
    zipped = plan_points(cfg_with({"zip": {"model.hidden_dim": [8, 16],
                                           "train.flops": ["1e8", 3e8]}}))
    assert [p.flops_budget for p in zipped] == [1e8, 3e8]
    with pytest.raises(UserError, match=r"^train.flops: 1e\+05 FLOPs buys"):
        plan_points(cfg_with({"zip": {"model.hidden_dim": [8], "train.flops": [1e5]}}))
    # no budgets, no sweep section: no budget, and the base run has no sweep point
    plain = plan_points(cfg_with({}))
    assert [(p.flops_budget, p.sweep_point) for p in plain] == [(None, None)]


def test_budgets_set_tokens_from_the_accounting():
    budgets = [1e9, 3e9]
    cfg = cfg_with({"budgets": budgets, "grid": {"model.hidden_dim": [8, 16, 32]},
                    "derived": {"model.embedding_dim": "model.hidden_dim"}})
    runs = plan_sweep(cfg)
    assert len(runs) == 6
    for r in runs:
        assert r.train.flops in budgets
        assert r.train.tokens == tokens_for_flops(r.vocab_size, r.model, r.train.flops,
                                                  seq_len=r.train.seq_len)
        acc = run_accounting(r)
        assert acc.tokens == r.train.tokens and acc.flops <= r.train.flops
    # IsoFLOP: within a budget, bigger models get fewer tokens
    for b in budgets:
        toks = [r.train.tokens for r in sorted(runs, key=lambda r: r.model.hidden_dim)
                if r.train.flops == b]
        assert toks == sorted(toks, reverse=True) and toks[0] > toks[-1]


def test_duplicate_run_ids_are_deduped_with_a_message():
    messages = []
    cfg = cfg_with({"grid": {"model.hidden_dim": [8, 16, 8], "train.lr": [1e-3, 0.001]}})
    runs = plan_sweep(cfg, log=messages.append)
    assert len(runs) == 2
    assert len(messages) == 1 and "4 of 6" in messages[0] and "2 runs" in messages[0]


def test_no_sweep_section_is_the_base_run():
    cfg = cfg_with({})
    assert [r.run_id for r in plan_sweep(cfg)] == [cfg.run_id]


@pytest.mark.parametrize("sweep, match", [
    ({"grid": {"model.hiden_dim": [8]}}, r"sweep\.grid: unknown config key 'model.hiden_dim'.*model.hidden_dim"),
    ({"grid": {"model.hidden_dim": []}}, r"sweep\.grid\.model\.hidden_dim: expected a non-empty list"),
    ({"zip": {"model.hidden_dim": [8, 16], "train.lr": [0.1]}}, r"sweep\.zip: paired axes must have equal lengths"),
    ({"derived": {"model.embedding_dim": "model.width"}}, r"sweep\.derived: unknown source 'model.width'"),
    ({"grid": {"model.hidden_dim": [8, -1]}}, r"model\.hidden_dim: -1 is out of range"),
    ({"runs": [{}]}, r"sweep\.runs\[0\]: expected a non-empty mapping"),
])
def test_bad_sweep_specs_name_the_key(sweep, match):
    with pytest.raises(UserError, match=match):
        plan_sweep(cfg_with(sweep))


def test_budget_too_small_for_one_batch():
    # 64 tokens per batch; h32 costs ~6 * (4*32*64 + 32*257) FLOPs per token
    cfg = cfg_with({"budgets": [1e6], "grid": {"model.hidden_dim": [8, 32]}})
    with pytest.raises(UserError, match=r"sweep\.budgets\[0\]: 1e\+06 FLOPs buys .* less than one batch"):
        plan_sweep(cfg)


def test_a_grown_sweep_is_accepted_and_a_changed_base_refused_unless_force(tmp_path, capsys):
    a = cfg_with({"grid": {"model.hidden_dim": [8, 16]}})
    grown = cfg_with({"grid": {"model.hidden_dim": [8, 16, 32]}})
    claim_sweep_dir(a, tmp_path, force=False)
    claim_sweep_dir(a, tmp_path, force=False)  # the same sweep again is fine
    for r in plan_sweep(a):
        upsert_record(tmp_path / "results.csv", RunRecord(run_id=r.run_id, sweep="t",
                                                          status="completed"))
    capsys.readouterr()
    # one more width: the same sweep, grown; its finished runs keep their run_ids
    claim_sweep_dir(grown, tmp_path, force=False)
    assert "3 runs planned, 2 finished kept, 1 new" in capsys.readouterr().err
    assert "32" in (tmp_path / "sweep.yaml").read_text()
    assert planned_run_ids(tmp_path) == {r.run_id for r in plan_sweep(grown)}
    # a changed base config changes every run_id: refused, saying what it would orphan
    other_base = cfg_with({"grid": {"model.hidden_dim": [8, 16, 32]}},
                          train={**BASE["train"], "lr": 1e-2})
    with pytest.raises(UserError, match=r"is in use: it holds sweep 't' whose base config differ "
                                        r"\(.*2 finished run\(s\) would be left out.*--force"):
        claim_sweep_dir(other_base, tmp_path, force=False)
    claim_sweep_dir(other_base, tmp_path, force=True)
    capsys.readouterr()
    assert "0.01" in (tmp_path / "sweep.yaml").read_text()
    # the same sweep through another executor / output dir is the same sweep
    claim_sweep_dir(from_dict({**other_base.to_dict(), "output": {"dir": "elsewhere"},
                               "sweep": {**other_base.to_dict()["sweep"], "executor": "slurm"}}),
                    tmp_path, force=False)
    assert "changed" not in capsys.readouterr().err


def test_status_shows_runs_that_dropped_out_of_the_plan(tmp_path):
    a = cfg_with({"grid": {"model.hidden_dim": [8, 16]}})
    claim_sweep_dir(a, tmp_path, force=False)
    # an old results.csv row holds an absolute run_dir, a new one a relative one: both load
    for r, where in zip(plan_sweep(a), [tmp_path / "runs", "runs"], strict=True):
        upsert_record(tmp_path / "results.csv", RunRecord(run_id=r.run_id, sweep="t",
                                                          status="completed",
                                                          run_dir=f"{where}/{run_dir_name(r)}"))
    shrunk = cfg_with({"grid": {"model.hidden_dim": [8]}})
    claim_sweep_dir(shrunk, tmp_path, force=False)
    text = format_status(tmp_path)
    assert "1 runs: 1 done" in text
    dropped = run_dir_name(plan_sweep(a)[1])
    assert "1 run(s) no longer in the sweep's plan" in text and f"completed: {dropped}" in text
    assert planned_run_ids(tmp_path) == {plan_sweep(a)[0].run_id}


def test_dir_with_other_results_and_no_sweep_yaml_is_refused(tmp_path):
    upsert_record(tmp_path / "results.csv", RunRecord(run_id="abc", sweep="other", status="completed"))
    with pytest.raises(UserError, match="holds runs of sweep.*'other'"):
        claim_sweep_dir(cfg_with({}), tmp_path, force=False)


def test_corrupt_results_line_is_reported_and_the_rest_kept(tmp_path):
    cfg = cfg_with({"grid": {"model.hidden_dim": [8, 16]}})
    claim_sweep_dir(cfg, tmp_path, force=False)
    runs = plan_sweep(cfg)
    for r, status in zip(runs, ["completed", "failed"], strict=True):
        upsert_record(tmp_path / "results.csv", RunRecord(run_id=r.run_id, sweep="t", status=status,
                                                          error="loss is nan at step 3"))
    with open(tmp_path / "results.csv", "a") as fh:
        fh.write("garbage,with,too,few\n")
    msgs = []
    planned = sweep_state(cfg, tmp_path, log=msgs.append)
    assert [p.state for p in planned] == ["done", "failed"]
    assert len(msgs) == 1 and "results.csv:4" in msgs[0]
    text = format_status(tmp_path)
    assert "1 done" in text and "1 failed" in text and "loss is nan at step 3" in text
    records, problems = read_results(tmp_path / "results.csv")
    assert len(records) == 2 and problems


def test_dry_run_table(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump({**BASE, "sweep": {
        "grid": {"model.hidden_dim": [8, 16]}, "budgets": [2e8],
        "derived": {"model.embedding_dim": "model.hidden_dim"}}}))
    out = tmp_path / "sweep"
    assert main(["sweep", str(cfg_path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split() == ["run_dir", "shape", "lr", "seed", "params_nonemb", "tokens",
                                "FLOPs", "est_time", "status"]
    runs = plan_sweep(from_dict({**BASE, "sweep": {"grid": {"model.hidden_dim": [8, 16]},
                                                   "budgets": [2e8], "derived": {
                                                       "model.embedding_dim": "model.hidden_dim"}}}))
    for r in runs:
        row = next(line for line in lines if line.startswith(run_dir_name(r)))
        acc = run_accounting(r)
        assert f"{acc.tokens:,}" in row and f"{acc.params_nonembedding:,}" in row
        assert row.split()[-1] == "todo"
    assert "an assumed cpu rate" in text and "one run at a time on the CPU" in text
    assert "GPU-hours left: 0 (CPU)" in text and "checkpoints: about" in text
    assert not out.exists()  # a dry run writes nothing
    # a bad spec through the CLI: one line, exit 2
    assert main(["sweep", str(cfg_path), "--set", "sweep.grid={model.nope: [1]}", "--dry-run"]) == 2
    assert "unknown config key 'model.nope'" in capsys.readouterr().err


def _dry_run(capsys, *argv: str) -> tuple[str, str]:
    assert main(["sweep", *argv, "--dry-run"]) == 0
    got = capsys.readouterr()
    return got.out, got.err


def _time_left(text: str) -> str:
    return text.split("left; about ")[1].split(" left on")[0]


def test_dry_run_estimates_gpus_slurm_and_parallel_slots(tmp_path, capsys):
    import yaml

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**BASE, "train": {**BASE["train"], "tokens": 2_000_000},
                                        "sweep": {"grid": {"model.hidden_dim": [64, 128]},
                                                  "seeds": [0, 1, 2, 3]}}))
    out = str(tmp_path / "s")
    # SLURM: a GPU rate (stated as an assumption), GPU-hours, every task at once unless capped
    text, _ = _dry_run(capsys, str(cfg_path), "--out", out, "--executor", "slurm")
    assert "an assumed cuda rate" in text and "8 array task(s) at once" in text
    gpu_h = float(text.split("GPU-hours left: ")[1].split()[0])
    assert gpu_h > 0
    capped, _ = _dry_run(capsys, str(cfg_path), "--out", out, "--executor", "slurm",
                         "--set", "sweep.slurm.max_parallel=1", "--set",
                         "sweep.slurm.gpus_per_run=2")
    assert "1 array task(s) at once" in capped
    assert float(capped.split("GPU-hours left: ")[1].split()[0]) == pytest.approx(2 * gpu_h, rel=0.01)
    # CPU partition: the CPU rate
    cpu, _ = _dry_run(capsys, str(cfg_path), "--out", out, "--executor", "slurm",
                      "--set", "sweep.slurm.gpus_per_run=0")
    assert "an assumed cpu rate" in cpu and "GPU-hours left: 0 (CPU)" in cpu
    # local CPU workers share the machine's cores: no faster than one at a time
    one, _ = _dry_run(capsys, str(cfg_path), "--out", out, "--devices", "cpu")
    two, _ = _dry_run(capsys, str(cfg_path), "--out", out, "--devices", "cpu,cpu")
    assert "2 CPU worker(s) sharing" in two
    assert "on 2 slot(s)" in two and "one run at a time on the CPU" in one


def test_makespan_divides_by_slots_longest_first():
    from llmscale.sweep.estimate import makespan

    assert makespan([10, 10, 10, 10], 1) == 40
    assert makespan([10, 10, 10, 10], 2) == 20
    assert makespan([30, 10, 10, 10], 2) == 30
    assert makespan([], 3) == 0


def test_dry_run_uses_the_rates_measured_by_the_sweeps_own_runs(tmp_path, capsys):
    import yaml

    cfg = cfg_with({"grid": {"model.hidden_dim": [8, 16, 32]}})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    claim_sweep_dir(cfg, tmp_path, force=False)
    runs = plan_sweep(cfg)
    rate, overhead = 1e9, 2e-3  # FLOP/s and seconds per step, chosen: the fit must find them
    for r in runs[:2]:
        acc = run_accounting(r)
        steps = acc.tokens // (r.train.batch_size * r.train.seq_len)
        train_s = steps * overhead + acc.flops / rate
        upsert_record(tmp_path / "results.csv", RunRecord(
            run_id=r.run_id, sweep="t", status="completed", tokens=acc.tokens, flops=acc.flops,
            batch_size=r.train.batch_size, seq_len=r.train.seq_len, gpu_count=0,
            train_time_s=train_s, wall_time_s=train_s + 1.5))
    text, _ = _dry_run(capsys, str(cfg_path), "--out", str(tmp_path))
    assert "measured on 2 completed cpu run(s) of this sweep: 1e+09 FLOP/s, 2 ms per step, " \
           "1.5 s set-up per run" in text
    assert "3 runs (2 done, 1 todo)" in text


def test_validate_and_dry_run_warn_when_a_model_cannot_fit_in_memory(tmp_path, capsys):
    assert main(["validate", "--set", "model.hidden_dim=100000"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 run(s) may not fit in memory" in err and "it would end as oom" in err
    assert "this machine's memory" in err
    _, err = _dry_run(capsys, "--set", "model.hidden_dim=100000", "--out", str(tmp_path / "s"))
    assert "may not fit in memory" in err
    assert main(["validate"]) == 0
    assert "may not fit" not in capsys.readouterr().err


def test_status_shows_elapsed_time_rates_and_an_eta(tmp_path):
    from datetime import datetime, timezone

    from llmscale.cli.status import time_lines
    from llmscale.sweep.estimate import eval_flops, fmt_time

    cfg = cfg_with({"grid": {"model.hidden_dim": [8, 16, 32, 64]}})
    claim_sweep_dir(cfg, tmp_path, force=False)
    assert "elapsed: nothing has started yet" in format_status(tmp_path)
    runs = plan_sweep(cfg)
    for i, r in enumerate(runs[:2]):
        acc = run_accounting(r)
        upsert_record(tmp_path / "results.csv", RunRecord(
            run_id=r.run_id, sweep="t", status="completed", tokens=acc.tokens, flops=acc.flops,
            batch_size=r.train.batch_size, seq_len=r.train.seq_len, gpu_count=0,
            train_time_s=acc.flops / 1e8, wall_time_s=acc.flops / 1e8 + 2.0,
            started_at=f"2026-11-29T10:0{2 * i}:00+00:00",
            finished_at=f"2026-11-29T10:0{2 * i + 1}:00+00:00"))
    planned = sweep_state(cfg, tmp_path)
    now = datetime(2026, 11, 29, 10, 10, tzinfo=timezone.utc)
    lines = time_lines(planned, now=now)
    assert lines[0] == "elapsed: 10m since the first run started (2026-11-29T10:00:00+00:00)"
    assert lines[1].startswith("rate: measured on 2 completed cpu run(s) of this sweep: 1e+08 FLOP/s")
    # the fit finds no per-step overhead here (train time is FLOPs / rate exactly)
    expected = sum(2.0 + (run_accounting(r).flops + eval_flops(r, run_accounting(r))) / 1e8
                   for r in runs[2:])
    assert lines[2] == f"ETA: about {fmt_time(expected)} for 2 run(s) left at the measured cpu " \
                       f"rate, 1 at a time"
    assert "ETA: about" in format_status(tmp_path)


# --------------------------------------------------------------------------------------------
# Slots: the one expansion of --devices / --runs-per-device, and the auto rule

FAKE_NVIDIA_SMI = """#!/bin/sh
# A stand-in for nvidia-smi's one query llmscale makes: uuid and total memory (MiB) per GPU.
for mib in $FAKE_GPU_MIB; do n=$((n+1)); echo "GPU-0000000$n-aaaa, $mib"; done
"""


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """nvidia-smi on PATH reporting the GPUs given (MiB each); returns a setter."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def set_gpus(*mib: int) -> None:
        monkeypatch.setenv("FAKE_GPU_MIB", " ".join(map(str, mib)))

    return set_gpus


def test_one_device_expansion_for_the_executors_and_the_estimate(fake_gpus, monkeypatch):
    from llmscale.sweep import slots
    from llmscale.sweep.estimate import local_slots

    fake_gpus(81559, 40960, 40960)
    assert slots.device_names("auto") == ["cuda:0", "cuda:1", "cuda:2"]
    assert slots.device_names(None) == ["cuda:0"]  # no --devices: one run on GPU 0
    assert slots.device_names("cpu,cpu") == ["cpu", "cpu"]
    assert slots.expand(["cuda:0", "cuda:1"], 2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    # CUDA_VISIBLE_DEVICES restricts and renumbers, as CUDA does; memory follows the mapping
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert slots.gpu_count() == 2
    assert slots.gpu_memory_bytes(0) == 40960 * 2**20 and slots.gpu_memory_bytes(1) == 81559 * 2**20
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000001,7,1")  # a UUID prefix, then a stop
    assert slots.device_names("auto") == ["cuda:0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert slots.device_names("auto") == ["cpu"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    # the estimate counts what the executors start
    s = local_slots("auto", 2)
    assert s.device == "cuda" and s.n == 6 and "3 GPU(s) x 2 run(s) each" in s.how
    assert local_slots("cpu,cpu", 1).n == 2 and local_slots("cpu,cpu", 1).device == "cpu"
    for bad in (0, "0", "-1", "two", "1.5"):
        with pytest.raises(UserError, match="allowed: an integer >= 1 or auto"):
            slots.parse_runs_per_device(bad)
    assert slots.parse_runs_per_device("AUTO") == "auto" and slots.parse_runs_per_device("3") == 3
    with pytest.raises(UserError, match="--devices 'gpu0'"):
        slots.device_names("cpu,gpu0")


def _runs(hidden: list[int]) -> list:
    cfg = cfg_with({"grid": {"model.hidden_dim": hidden}})
    return [(c, run_accounting(c)) for c in plan_sweep(cfg)]


def test_auto_packing_takes_the_least_of_memory_utilisation_cores_and_runs():
    from llmscale.sweep.estimate import (
        WORKER_BYTES,
        Rate,
        auto_packing,
        memory_estimate,
        utilisation,
    )

    runs = _runs([8, 16, 32, 64, 12, 24])
    biggest = max(memory_estimate(c, a).total for c, a in runs)
    gib = 2**30
    # a fast device and 1 ms of host work per step: each run computes a small share of its time
    rate = Rate("cuda", 1e12, 1e-3, 0.0, "measured on 2 completed cuda run(s) of this sweep")
    u = max(utilisation(c, a, rate) for c, a in runs)
    assert 0 < u < 0.05
    free = auto_packing("cuda", 1, runs, rate, device_bytes=80 * gib, cores=64)
    assert free.runs_per_device == 6  # every limit but the runs is far higher
    assert "runs 6" in free.why and f"busiest run computes {u:.0%}" in free.why
    # memory binds: room for 3 workers with their runs
    three = int(3.5 * (biggest + WORKER_BYTES) / 0.9)
    assert auto_packing("cuda", 1, runs, rate, device_bytes=three, cores=64).runs_per_device == 3
    # cores bind: one core per worker, shared by the devices
    assert auto_packing("cuda", 2, runs * 4, rate, device_bytes=80 * gib,
                        cores=8).runs_per_device == 4
    # utilisation binds: a device that each run keeps ~40% busy takes two
    slow = Rate("cuda", rate.flops_per_s * u / 0.4 * (1 - 0.4) / (1 - u), 1e-3, 0.0, "slow")
    assert utilisation(*max(runs, key=lambda r: utilisation(*r, slow)), slow) == \
        pytest.approx(0.4, rel=1e-6)
    two = auto_packing("cuda", 1, runs, slow, device_bytes=80 * gib, cores=64)
    assert two.runs_per_device == 2 and "utilisation 2" in two.why
    # nothing measured yet: one run per GPU until the sweep's runs measure the rate
    first = auto_packing("cuda", 1, runs, None, device_bytes=80 * gib, cores=64)
    assert first.runs_per_device == 1 and "not measured yet" in first.why
    # unknown GPU memory: no packing it cannot vouch for
    assert auto_packing("cuda", 1, runs, rate, device_bytes=None, cores=64).runs_per_device == 1
    # CPU: one single-threaded worker per core, within the machine's memory and the runs
    assert auto_packing("cpu", 1, runs, None, device_bytes=64 * gib, cores=4).runs_per_device == 4
    assert auto_packing("cpu", 1, runs[:2], None, device_bytes=64 * gib,
                        cores=4).runs_per_device == 2
    assert auto_packing("cpu", 1, runs, None, device_bytes=2 * biggest,
                        cores=16).runs_per_device == 1


def test_auto_packing_adds_workers_once_the_sweeps_runs_measure_the_rate(fake_gpus, tmp_path,
                                                                         capsys):
    import math
    import os

    from llmscale.sweep.estimate import Rate, utilisation
    from llmscale.sweep.executors.pool import AutoPacking

    fake_gpus(81559)
    cfg = cfg_with({"grid": {"model.hidden_dim": [8, 12, 16, 24, 32, 48]}})
    claim_sweep_dir(cfg, tmp_path, force=False)
    todo = sweep_state(cfg, tmp_path, probe_claims=False)
    packing = AutoPacking(["cuda:0"], todo, [])
    assert packing.slots() == ["cuda:0"] and "not measured yet" in capsys.readouterr().err

    def measured(p, rate=1e11, overhead=1e-3):  # a completed GPU run the time model fits exactly
        a = p.accounting
        steps = a.tokens // (p.cfg.train.batch_size * p.cfg.train.seq_len)
        t = steps * overhead + a.flops / rate
        return RunRecord(run_id=p.run_id, sweep="t", status="completed", tokens=a.tokens,
                         flops=a.flops, batch_size=p.cfg.train.batch_size,
                         seq_len=p.cfg.train.seq_len, gpu_count=1, train_time_s=t,
                         wall_time_s=t + 1.0)

    assert packing.done(todo[0], measured(todo[0])) == []  # one size: overhead not separable
    new = packing.done(todo[1], measured(todo[1]))
    left = todo[2:]
    u = max(utilisation(p.cfg, p.accounting, Rate("cuda", 1e11, 1e-3, 0.0, "")) for p in left)
    want = min(math.floor(1 / u), os.cpu_count() or 1, len(left))
    assert want >= 2 or (os.cpu_count() or 1) == 1
    assert new == ["cuda:0"] * (want - 1) and packing.k == want
    said = capsys.readouterr().err
    assert f"auto: {want} run(s) per GPU" in said and "measured on 2 completed cuda run(s)" in said
    assert packing.done(todo[2], None) == []  # never asks twice for what is running


def test_dry_run_with_auto_states_the_rule(tmp_path, capsys):
    import os

    text, _ = _dry_run(capsys, "--devices", "cpu", "--runs-per-device", "auto",
                       "--set", "sweep.grid={model.hidden_dim: [8, 12, 16]}",
                       "--out", str(tmp_path / "s"))
    k = min(os.cpu_count() or 1, 3)
    assert f"auto: {k} CPU worker(s) = min(cores {os.cpu_count()}, memory" in text
    assert main(["sweep", "--dry-run", "--runs-per-device", "0"]) == 2
    assert "allowed: an integer >= 1 or auto" in capsys.readouterr().err


def test_the_analysis_runs_blas_on_one_thread():
    from threadpoolctl import threadpool_info

    from llmscale.fit.robust import serial_blas

    before = {i["filepath"]: i["num_threads"] for i in threadpool_info()
              if i["user_api"] == "blas"}
    with serial_blas():  # numpy's and scipy's OpenBLAS alike, loaded or not before
        inside = {i["filepath"]: i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas"}
    assert len(inside) >= 2 and set(inside.values()) == {1}, inside
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert {k: v for k, v in after.items() if k in before} == before
