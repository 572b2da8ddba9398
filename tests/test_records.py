import numpy as np

from llmscale.records import RunRecord, read_results, upsert_record


def test_upsert_replaces_by_run_id_and_round_trips_types(tmp_path):
    path = tmp_path / "results.csv"
    upsert_record(path, RunRecord(run_id="a", status="preempted", hidden_dim=8))
    upsert_record(path, RunRecord(run_id="b", status="completed", val_loss=np.float64(2.5),
                                  tie_weights=True, tokens=np.int64(1000)))
    upsert_record(path, RunRecord(run_id="a", status="completed", val_loss=3.0))
    records, problems = read_results(path)
    assert problems == []
    by_id = {r.run_id: r for r in records}
    assert sorted(by_id) == ["a", "b"]
    assert by_id["a"].status == "completed" and by_id["a"].hidden_dim is None
    assert by_id["b"].val_loss == 2.5 and by_id["b"].tokens == 1000 and by_id["b"].tie_weights is True


def test_corrupt_row_is_reported_and_the_rest_kept(tmp_path):
    path = tmp_path / "results.csv"
    upsert_record(path, RunRecord(run_id="a", status="completed", val_loss=3.0))
    with open(path, "a") as fh:
        fh.write("garbage,with,too,few\n")
    records, problems = read_results(path)
    assert [r.run_id for r in records] == ["a"]
    assert len(problems) == 1 and "row skipped" in problems[0]
    problems = upsert_record(path, RunRecord(run_id="b", status="completed"))
    assert len(problems) == 1
    assert (tmp_path / "results.csv.bak").read_text().count("garbage") == 1
    assert sorted(r.run_id for r in read_results(path)[0]) == ["a", "b"]


def test_old_tables_without_the_new_columns_still_load(tmp_path):
    """A results.csv written before the time split, model_kind, flops_budget and sweep_point
    existed reads with those fields empty (model_kind: the LSTM every old run was)."""
    from llmscale.records import COLUMNS, STATUSES

    new = {"setup_s", "train_time_s", "eval_time_s", "checkpoint_time_s", "model_kind",
           "flops_budget", "sweep_point", "peak_memory_reserved_bytes"}
    assert new <= set(COLUMNS) and "running" not in STATUSES
    old_cols = [c for c in COLUMNS if c not in new]
    path = tmp_path / "results.csv"
    row = {"run_id": "abc", "status": "completed", "hidden_dim": "64", "val_loss": "2.5",
           "wall_time_s": "10.0", "tokens_per_s": "1000.0", "run_dir": "/abs/runs/x"}
    path.write_text(",".join(old_cols) + "\n" + ",".join(row.get(c, "") for c in old_cols)
                    + "\n")
    records, problems = read_results(path)
    assert problems == []
    (r,) = records
    assert (r.run_id, r.hidden_dim, r.val_loss, r.wall_time_s) == ("abc", 64, 2.5, 10.0)
    assert r.model_kind == "lstm"
    assert r.train_time_s is None and r.flops_budget is None and r.sweep_point is None
    # and an upsert rewrites the table in the new schema without losing the old row
    upsert_record(path, RunRecord(run_id="new", status="completed", train_time_s=1.5,
                                  sweep_point='{"model.hidden_dim": 64}', flops_budget=1e12))
    records, _ = read_results(path)
    by_id = {x.run_id: x for x in records}
    assert by_id["abc"].val_loss == 2.5 and by_id["new"].flops_budget == 1e12
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
