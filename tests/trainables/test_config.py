"""Bad configs fail with a message naming the field, before any work starts."""

import pytest

from evaluation.errors import ConfigError
from trainables.config import apply_overrides, flatten, load_trial_config, parse_yaml


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("lora.r=0", "lora.r"),
        ("lora.r=-4", "lora.r"),
        ("quantization.bits=3", "quantization.bits"),
        ("lora.target_modules=attn", "lora.target_modules"),
        ("lora.rank=8", "lora.rank"),
        ("training.lr=-1", "training.lr"),
        ("data.template=no placeholders", "data.template"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_trial_config(None, [override])
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known keys here: r, alpha, dropout, target_modules"):
        load_trial_config(None, ["lora.rank=8"])


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "model: {path: tiny}\nlora: {r: 4, target_modules: [q_proj, v_proj]}\ntraining: {lr: 1e-4}\n"
    )
    cfg = load_trial_config(path, ["lora.r=16", "quantization.bits=8"])
    assert (cfg.lora.r, cfg.quantization.bits, cfg.training.lr) == (16, 8, 1e-4)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert flatten(cfg)["lora.r"] == 16


def test_scientific_notation_is_a_float():
    assert parse_yaml("[1e-5, 2.0e-4, 3]") == [1e-5, 2e-4, 3]


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="--set"):
        apply_overrides({}, ["lora.r"])
    with pytest.raises(ConfigError, match="existing YAML"):
        load_trial_config(tmp_path / "nope.yaml")


def test_config_error_survives_pickling():
    """Ray pickles a trial's exception to show it in the driver: the field must survive."""
    import pickle

    err = pickle.loads(
        pickle.dumps(ConfigError("training.max_seq_len", 16, "a longer length", "no rows left"))
    )
    assert (err.field, err.value, err.hint) == ("training.max_seq_len", 16, "no rows left")
    assert str(err).startswith("training.max_seq_len: got 16")
