"""Parameter counts from a config alone, and target-module presets against real module names."""

import pytest
from helpers import OPEN_LLAMA

from evaluation.errors import ConfigError
from trainables.config import LoraConfig, ModelConfig, QuantizationConfig
from trainables.model import count_trainable_params, load_base_model, resolve_target_modules


@pytest.mark.parametrize(
    ("r", "targets", "expected"),
    [(8, "attention", 2_662_400), (16, "attention", 5_324_800), (8, "all-linear+lm_head", 12_994_560)],
)
def test_seed_table_from_config_alone(r, targets, expected):
    assert sorted(p.name for p in OPEN_LLAMA.iterdir()) == ["config.json"]  # in the repo, and no weights
    assert (
        count_trainable_params(ModelConfig(path=str(OPEN_LLAMA)), LoraConfig(r=r, target_modules=targets))
        == expected
    )


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dir):
    return load_base_model(ModelConfig(path=str(tiny_model_dir)), QuantizationConfig(bits=16))


def test_presets_resolve_against_the_model(tiny_base):
    assert resolve_target_modules(tiny_base, "attention") == ["q_proj", "v_proj"]
    assert set(resolve_target_modules(tiny_base, "attention-all")) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    with_head = resolve_target_modules(tiny_base, "all-linear+lm_head")
    assert "lm_head" in with_head and "down_proj" in with_head


def test_unknown_module_lists_the_models_linear_layers(tiny_base):
    with pytest.raises(ConfigError) as err:
        resolve_target_modules(tiny_base, ["q_proj", "qkv"])
    assert err.value.field == "lora.target_modules"
    assert "q_proj" in err.value.allowed and "gate_proj" in err.value.allowed


def test_missing_local_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model.path"):
        load_base_model(ModelConfig(path=str(tmp_path / "absent")), QuantizationConfig(bits=16))


def test_remote_code_refused_unless_allowed(tmp_path, tiny_model_dir):
    import json
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Model"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_base_model(ModelConfig(path=str(tmp_path / "m")), QuantizationConfig(bits=16))


def test_an_adapter_on_lm_head_is_saved_without_the_frozen_head_and_loads_back_the_same(
    tmp_path, tiny_model_dir
):
    """Saved without a state dict, peft would add the whole frozen lm_head to an adapter that targets it
    (205 MB on the 3B seed model); the head is the base's, so the adapter holds LoRA weights only and
    still reproduces the trained model's outputs."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file

    from trainables.checkpoint import save_adapter

    def base():
        return load_base_model(ModelConfig(path=str(tiny_model_dir)), QuantizationConfig(bits=16))

    torch.manual_seed(0)
    model = get_peft_model(
        base(), LoraConfig(r=4, target_modules=resolve_target_modules(base(), "all-linear+lm_head"))
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:  # as trained: B leaves zero
            torch.nn.init.normal_(p, std=0.02)
    save_adapter(model, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved), [k for k in saved if "lora_" not in k]
    assert any("lm_head.lora_A" in k for k in saved)
    ids = torch.tensor([[1, 5, 9, 2]])
    loaded = PeftModel.from_pretrained(base(), str(tmp_path / "adapter"))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, loaded.eval()(ids).logits)
