"""The shipped configs validate and expand, the quickstart runs end to end (reduced), and the
README documents every config key and results column."""

import json
import re
from pathlib import Path

import pytest

from llmscale.cli import main
from llmscale.config import load_config, valid_keys
from llmscale.records import COLUMNS, read_results
from llmscale.sweep import plan_sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_the_documented_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"quickstart.yaml", "seed_example.yaml", "wikitext103_width_depth.yaml",
            "wikitext103_isoflop.yaml", "local_text.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates_and_expands(path, capsys, tmp_path):
    argv = ["validate", str(path)]
    if load_config(path).data.source == "files":
        # a template for the user's own corpus: validate checks its files exist, so give one
        (tmp_path / "a.txt").write_text("some text\n" * 100)
        argv += ["--set", f"data.paths=[{tmp_path}/*.txt]"]
    assert main(argv) == 0, capsys.readouterr().err
    runs = plan_sweep(load_config(path))
    assert len(runs) >= 1
    assert len({r.run_id for r in runs}) == len(runs)


def test_a_files_template_without_its_corpus_says_which_glob_matches_nothing(capsys):
    assert main(["validate", str(ROOT / "configs" / "local_text.yaml")]) == 2
    assert "data.paths: 'corpus/*.txt' matches no file" in capsys.readouterr().err


def test_seed_example_is_the_founding_model():
    cfg = load_config(ROOT / "configs" / "seed_example.yaml")
    assert (cfg.vocab_size, cfg.model.embedding_dim, cfg.model.hidden_dim,
            cfg.model.num_layers) == (10000, 300, 500, 10)


def test_quickstart_spans_enough_sizes():
    from llmscale.accounting import run_accounting

    runs = plan_sweep(load_config(ROOT / "configs" / "quickstart.yaml"))
    n = sorted({run_accounting(r).params_nonembedding for r in runs})
    assert len(runs) >= 8 and len(n) >= 8
    assert n[-1] / n[0] >= 10**1.5


def test_quickstart_end_to_end_reduced(tmp_path, capsys):
    """The README's main job, shrunk by overrides: sweep -> results.csv -> fit -> plots -> report."""
    out = tmp_path / "quickstart"
    rc = main(["sweep", str(ROOT / "configs" / "quickstart.yaml"), "--out", str(out),
               "--set", "data.synthetic_tokens=150000", "--set", "data.synthetic_val_tokens=5000",
               "--set", "eval.tokens=4096", "--set", "eval.every_tokens=16384",
               "--set", "sweep.zip={model.hidden_dim: [8, 12, 16, 24, 8, 12, 16, 24], "
                        "train.tokens: [16384, 16384, 16384, 16384, 32768, 32768, 32768, 32768]}"])
    assert rc == 0, capsys.readouterr().err
    records, problems = read_results(out / "results.csv")
    assert problems == [] and len(records) == 8
    assert all(r.status == "completed" for r in records)
    fit = json.loads((out / "fit.json").read_text())
    assert {"power", "saturating", "linear"} <= set(fit["laws"])
    assert fit["floor"]["entropy_nats_per_token"] > 0
    assert (out / "plots" / "loss_vs_params.png").is_file()
    html = (out / "report.html").read_text()
    assert "Scaling report" in html and 'src="http' not in html


def test_readme_documents_every_config_key_and_column():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([a-z_.0-9]+)`", readme))
    missing_keys = [k for k in valid_keys() if k not in documented]
    assert not missing_keys, f"config keys missing from the README: {missing_keys}"
    missing_cols = [c for c in COLUMNS if c not in documented]
    assert not missing_cols, f"results.csv columns missing from the README: {missing_cols}"


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert test_cmd in readme and test_cmd in ci
    assert "bash scripts/setup.sh && .venv/bin/llmscale sweep configs/quickstart.yaml" in readme
