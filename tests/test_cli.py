import os
import subprocess
import sys

import pytest

from llmscale import __version__
from llmscale.cli import main

BROKEN = {
    "unknown_key.yaml": "model: {hiden_dim: 64}\n",
    "unknown_section.yaml": "optimizer: {lr: 1}\n",
    "negative_lr.yaml": "train: {lr: -3.0e-3}\n",
    "zero_hidden.yaml": "model: {hidden_dim: 0}\n",
    "zero_layers.yaml": "model: {num_layers: 0}\n",
    "zero_seq_len.yaml": "train: {seq_len: 0}\n",
    "tied_unequal.yaml": "model: {tie_weights: true, embedding_dim: 32, hidden_dim: 64}\n",
    "list_document.yaml": "- model\n",
    "empty.yaml": "",
    "invalid_yaml.yaml": "model: {hidden_dim: 64\n",
    "wrong_type.yaml": "train: {batch_size: thirty}\n",
    "bad_source.yaml": "data: {source: s3}\n",
    "files_without_paths.yaml": "data: {source: files}\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_validate_broken_configs_one_line_exit_2(tmp_path, capsys, name):
    p = tmp_path / name
    p.write_text(BROKEN[name])
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmscale: error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_validate_prints_resolved_config(capsys):
    assert main(["validate", "--set", "model.hidden_dim=96"]) == 0
    out = capsys.readouterr().out
    assert "hidden_dim: 96" in out and "run_id:" in out and "params_nonembedding" in out


def test_bad_flag_is_a_user_error(capsys):
    assert main(["train", "--no-such-flag"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_debug_shows_traceback(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("model: {hidden_dim: 0}\n")
    assert main(["--debug", "validate", str(p)]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--debug", "validate"], ["validate", "--debug"]])
def test_debug_before_or_after_the_subcommand(tmp_path, capsys, argv):
    p = tmp_path / "c.yaml"
    p.write_text("model: {hidden_dim: 0}\n")
    assert main([*argv, str(p)]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-v", "validate"], ["validate", "-v"],
                                  ["validate", "--log-level", "debug"],
                                  ["--log-level", "debug", "validate"]])
def test_log_level_before_or_after_the_subcommand(capsys, argv):
    import logging

    assert main(argv) == 0
    assert logging.getLogger("llmscale").getEffectiveLevel() == logging.DEBUG
    assert main(["validate"]) == 0
    assert logging.getLogger("llmscale").getEffectiveLevel() == logging.INFO


def test_log_messages_go_to_stderr_with_a_timestamp(capsys):
    import logging

    assert main(["--log-level", "info", "validate"]) == 0
    logging.getLogger("llmscale.data").info("encoding 3 files")
    logging.getLogger("llmscale.data").debug("not shown at info")
    err = capsys.readouterr().err
    assert "INFO llmscale.data: encoding 3 files" in err and "not shown" not in err


def test_bad_log_level_is_a_user_error(capsys):
    assert main(["validate", "--log-level", "loud"]) == 2
    assert "--log-level" in capsys.readouterr().err


def test_repeated_submitit_warnings_are_shown_once(capfd):
    import logging

    import submitit  # noqa: F401 - its import configures the "submitit" logger

    from llmscale.logs import quiet_submitit

    quiet_submitit()
    log = logging.getLogger("submitit")
    for call in range(3):
        log.warning(f"Call #{call} - Bypassing sacct error, status may be inaccurate.")
    log.warning("something else")
    err = capfd.readouterr().err
    assert err.count("Bypassing sacct error") == 1 and "something else" in err


def test_internal_error_exits_1(monkeypatch, capsys):
    from llmscale.cli import validate

    def boom(args):
        raise RuntimeError("kaput")

    monkeypatch.setattr(validate, "run", boom)
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "kaput" in err and "Traceback" not in err


def test_python_dash_m_version_and_help_tree():
    out = subprocess.run([sys.executable, "-m", "llmscale", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert __version__ in out
    helptext = subprocess.run([sys.executable, "-m", "llmscale", "--help"], capture_output=True,
                              text=True, check=True).stdout
    for cmd in ("validate", "train", "sweep", "status", "fit", "plot", "report", "predict", "bench"):
        assert cmd in helptext


def test_package_exports_load_lazily():
    code = ("import sys, llmscale; assert 'torch' not in sys.modules, 'import llmscale loads torch'; "
            "from llmscale import LargeLanguageModel, load_config, train_run, run_sweep, fit_sweep; "
            "import llmscale.model, llmscale.train, llmscale.sweep, llmscale.analysis; "
            "assert LargeLanguageModel is llmscale.model.LargeLanguageModel; "
            "assert train_run is llmscale.train.train_run and fit_sweep is llmscale.analysis.fit_sweep; "
            "assert run_sweep is llmscale.sweep.run_sweep and callable(load_config); "
            "assert set(llmscale.__all__) <= set(dir(llmscale))")
    subprocess.run([sys.executable, "-c", code], check=True)
    import llmscale

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        llmscale.nope  # noqa: B018


def test_info_log_shows_tokenizer_training_encoding_and_cache_hits(tmp_path):
    """A real `llmscale train` (BPE on a tiny synthetic language), twice: the first builds the
    tokenizer and token cache, the second hits the cache; both say so at INFO on stderr."""
    env = {**os.environ, "LLMSCALE_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "llmscale", "train", "--device", "cpu",
            "--set", "data.synthetic_tokens=2000", "--set", "data.synthetic_val_tokens=200",
            "--set", "data.synthetic_vocab=64", "--set", "tokenizer.vocab_size=300",
            "--set", "model.hidden_dim=8", "--set", "model.embedding_dim=8",
            "--set", "train.tokens=512", "--set", "train.batch_size=4", "--set", "train.seq_len=16",
            "--set", "eval.tokens=64"]
    first = subprocess.run([*argv, "--out", str(tmp_path / "a")], env=env, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "INFO llmscale.data: training bpe tokenizer" in first.stderr
    assert "INFO llmscale.data: encoding train split" in first.stderr
    second = subprocess.run([*argv, "--out", str(tmp_path / "b")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "token cache hit" in second.stderr and "training bpe" not in second.stderr


def test_datasets_progress_bars_only_on_a_terminal(monkeypatch):
    """Off a terminal (a SLURM log, a pipe), datasets' bars are turned off before it is imported."""
    import io

    from llmscale.logs import configure_logging

    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    configure_logging("info")
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
    from datasets.utils import are_progress_bars_disabled

    assert are_progress_bars_disabled()
