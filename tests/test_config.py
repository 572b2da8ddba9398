import pytest

from llmscale.config import RunConfig, dump_yaml, load_config, run_id, valid_keys, with_overrides
from llmscale.errors import UserError


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_yaml_and_overrides_in_order(tmp_path):
    p = _write(tmp_path, "model: {hidden_dim: 128}\ntrain: {lr: 1.0e-3}\n")
    cfg = load_config(p, ["train.lr=2e-3", "model.num_layers=3"])
    assert cfg.model.hidden_dim == 128  # YAML over default
    assert cfg.train.lr == 2e-3  # --set over YAML (and "2e-3", a string in YAML 1.1, is a number)
    assert cfg.model.num_layers == 3
    assert cfg.model.embedding_dim == RunConfig().model.embedding_dim  # default kept


def test_integral_strings_and_underscores_become_ints(tmp_path):
    cfg = load_config(_write(tmp_path, "train: {tokens: 2_000_000}\n"), ["eval.tokens=1e5"])
    assert cfg.train.tokens == 2_000_000 and isinstance(cfg.train.tokens, int)
    assert cfg.eval.tokens == 100_000 and isinstance(cfg.eval.tokens, int)


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(AttributeError):
        cfg.model.hidden_dim = 3  # type: ignore[misc]


def test_run_id_ignores_key_order_and_output_settings(tmp_path):
    a = load_config(_write(tmp_path, "model: {hidden_dim: 32, num_layers: 2}\n"
                                     "output: {dir: a}\nname: x\n", "a.yaml"))
    b = load_config(_write(tmp_path, "name: y\noutput: {dir: b, log_every_steps: 3}\n"
                                     "model: {num_layers: 2, hidden_dim: 32}\n", "b.yaml"))
    assert run_id(a) == run_id(b)
    assert len(run_id(a)) == 12
    c = with_overrides(a, {"model.hidden_dim": 33})
    assert run_id(c) != run_id(a)
    assert run_id(with_overrides(a, {"data.cache_dir": "/elsewhere"})) == run_id(a)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["data.source=files", "data.paths=[a.txt, b.txt]"])
    again = load_config(_write(tmp_path, dump_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize("text,overrides,needle", [
    ("model: {hiden_dim: 3}\n", [], "unknown key 'model.hiden_dim'; did you mean model.hidden_dim?"),
    ("modle: {hidden_dim: 3}\n", [], "did you mean model?"),
    ("train: {lr: -0.1}\n", [], "train.lr: -0.1 is out of range"),
    ("model: {hidden_dim: 0}\n", [], "model.hidden_dim: 0 is out of range"),
    ("model: {num_layers: 0}\n", [], "model.num_layers: 0"),
    ("train: {seq_len: 0}\n", [], "train.seq_len: 0"),
    ("model: {tie_weights: true, embedding_dim: 32, hidden_dim: 64}\n", [],
     "model.tie_weights: true needs embedding_dim == hidden_dim"),
    ("model: {hidden_dim: big}\n", [], "model.hidden_dim: expected an integer, got 'big'"),
    ("model: {tie_weights: yes please}\n", [], "model.tie_weights: expected true or false"),
    ("train: {lr: .nan}\n", [], "train.lr: expected a number"),
    ("- a\n- b\n", [], "must be a mapping of sections"),
    ("", [], "is empty"),
    ("model: {hidden_dim: [1, 2\n", [], "is not valid YAML at line"),
    ("model: 3\n", [], "model must be a mapping"),
    ("data: {source: ftp}\n", [], "data.source: 'ftp' is out of range; allowed: synthetic, facts, files, hf"),
    ("tokenizer: {kind: bytes, vocab_size: 4096}\n", [], "tokenizer.vocab_size: 4096"),
    ("", ["train.batch_size=-4"], "train.batch_size: -4"),
    ("", ["train"], "expected section.key=value"),
    ("", ["model.hidden_dim.x=1"], "model.hidden_dim: expected an integer"),
])
def test_bad_input_is_one_clear_error(tmp_path, text, overrides, needle):
    p = _write(tmp_path, text) if text or not overrides else None
    with pytest.raises(UserError) as info:
        load_config(p, overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_valid_keys_cover_every_section():
    keys = valid_keys()
    assert "model.hidden_dim" in keys and "sweep.slurm.partition" in keys and "name" in keys
