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
