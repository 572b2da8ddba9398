"""`llmscale validate` checks the whole sweep, and the config defaults that follow a choice:
bytes tokenizer, validation files, the Hugging Face cache, run trackers' extras."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmscale.cli import main
from llmscale.config import from_dict, load_config

BYTES = {"tokenizer": {"kind": "bytes"}, "model": {"embedding_dim": 8, "hidden_dim": 8}}


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmscale: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("override, names", [
    ("sweep.grid={model.hiden_dim: [8]}", "sweep.grid: unknown config key 'model.hiden_dim'; "
                                           "did you mean model.hidden_dim?"),
    ("sweep.grid={model.hidden_dim: [8, 0]}", "model.hidden_dim: 0 is out of range"),
    ("sweep.grid={model.hidden_dim: []}", "sweep.grid.model.hidden_dim: expected a non-empty list"),
    ("sweep.runs=[{train.lr: -1}]", "train.lr: -1.0 is out of range"),
])
def test_validate_checks_every_point_of_the_sweep(capsys, override, names):
    assert names in one_line_error(capsys, ["validate", "--set", override])


def test_validate_checks_files_and_globs(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello world\n" * 50)
    ok = ["--set", "data.source=files", "--set", f"data.paths=[{tmp_path}/*.txt]"]
    err = one_line_error(capsys, ["validate", *ok[:2], "--set", f"data.paths=[{tmp_path}/*.md]"])
    assert "data.paths:" in err and "matches no file" in err
    err = one_line_error(capsys, ["validate", *ok, "--set",
                                  f"data.validation_paths=[{tmp_path}/valid*.txt]"])
    assert "data.validation_paths:" in err and "valid*.txt" in err
    # a swept path is checked too, not only the base run's
    err = one_line_error(capsys, ["validate", *ok, "--set",
                                  f"sweep.runs=[{{data.paths: [{tmp_path}/nope.txt]}}]"])
    assert "nope.txt" in err
    assert main(["validate", *ok]) == 0


def test_validate_prints_the_plan_summary(capsys):
    assert main(["validate", "--set", "sweep.grid={model.hidden_dim: [16, 32, 64]}",
                 "--set", "sweep.seeds=[0, 1]"]) == 0
    out = capsys.readouterr().out
    assert "# sweep: 6 runs (6 todo);" in out and "FLOPs in all" in out
    assert "# GPU-hours left: 0 (CPU)" in out and "an assumed cpu rate" in out
    assert main(["validate", "--executor", "slurm"]) == 0
    assert "an assumed cuda rate" in capsys.readouterr().out


def test_bytes_tokenizer_needs_no_vocab_size(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(BYTES))
    cfg = load_config(p)
    assert cfg.tokenizer.vocab_size is None and cfg.vocab_size == 257
    assert main(["validate", "--set", "tokenizer.kind=bytes"]) == 0
    # an explicit BPE size with bytes is still a mistake, named
    err = one_line_error(capsys, ["validate", "--set", "tokenizer.kind=bytes",
                                  "--set", "tokenizer.vocab_size=4096"])
    assert "tokenizer.vocab_size" in err
    # run_ids of configs that already wrote vocab_size: null do not change
    assert from_dict({**BYTES, "tokenizer": {"kind": "bytes", "vocab_size": None}}).run_id == \
        from_dict(BYTES).run_id


def test_validation_paths_are_the_validation_split(tmp_path):
    from llmscale.data.sources import load_corpus

    (tmp_path / "train.txt").write_text("the cat sat on the mat\n" * 200)
    (tmp_path / "valid.txt").write_text("a dog ran in the fog\n" * 20)
    cfg = from_dict({"data": {"source": "files", "paths": [str(tmp_path / "train.txt")],
                              "validation_paths": [str(tmp_path / "valid*.txt")],
                              "cache_dir": str(tmp_path / "cache")}})
    corpus = load_corpus(cfg.data, tmp_path / "cache")
    assert "".join(corpus.val) == "a dog ran in the fog\n" * 20
    assert "".join(corpus.train) == "the cat sat on the mat\n" * 200  # nothing held out
    held_out = from_dict({"data": {"source": "files", "paths": [str(tmp_path / "train.txt")]}})
    assert held_out.run_id != cfg.run_id
    # an empty validation_paths leaves the run_id as it was before the key existed
    assert "validation_paths" not in held_out.to_dict()["data"] or \
        held_out.run_id == from_dict({"data": {"source": "files",
                                               "paths": [str(tmp_path / "train.txt")],
                                               "validation_paths": []}}).run_id
    with pytest.raises(ValueError, match="data.validation_paths: only for data.source files"):
        from_dict({"data": {"source": "synthetic", "validation_paths": ["x.txt"]}})


def test_hf_cache_honours_hf_variables_unless_cache_dir_is_set(tmp_path, monkeypatch):
    from llmscale.data.sources import hf_cache_dir

    root = tmp_path / "llmscale-cache"
    for var in ("HF_DATASETS_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    plain = from_dict({}).data
    assert hf_cache_dir(plain, root) == str(root / "hf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_cache_dir(plain, root) is None  # datasets' own resolution: HF_* variables
    explicit = from_dict({"data": {"cache_dir": str(tmp_path / "mine")}}).data
    assert hf_cache_dir(explicit, root) == str(root / "hf")


def test_hf_datasets_cache_receives_a_files_source(tmp_path):
    """End to end in a fresh process (datasets reads HF_* when imported): the `datasets` cache
    of a files source lands under HF_DATASETS_CACHE, not under llmscale's cache root."""
    (tmp_path / "t.txt").write_text("some text to read\n" * 100)
    code = ("from pathlib import Path; from llmscale.config import from_dict; "
            "from llmscale.data.sources import load_corpus; "
            f"d = from_dict({{'data': {{'source': 'files', 'paths': ['{tmp_path / 't.txt'}']}}}}).data; "
            f"load_corpus(d, Path('{tmp_path / 'llc'}'))")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "HF_DATASETS_CACHE": str(tmp_path / "hfc"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert any((tmp_path / "hfc").rglob("*.arrow"))
    assert not (tmp_path / "llc" / "hf").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_tracker_that_is_not_installed_names_its_extra(capsys):
    err = one_line_error(capsys, ["validate", "--set", "output.report_to=[wandb]"])
    assert "pip install 'llmscale[wandb]'" in err


def test_an_unknown_tracker_is_refused(capsys):
    err = one_line_error(capsys, ["validate", "--set", "output.report_to=[mlflow]"])
    assert "output.report_to[0]: 'mlflow' is not a tracker" in err and "llmscale[tensorboard]" in err


def test_readme_documents_the_exit_codes():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in ("0", "1", "2", "3", "130"):
        assert f"| `{code}` |" in section
