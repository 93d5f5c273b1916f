"""Artifacts from untrusted places run no code: adapters and base weights load from safetensors only
(a pickle is refused before it is opened), and a model that ships custom code, local or on the hub,
is refused unless `model.trust_remote_code: true`. (tests/trainables/test_model.py covers a local
directory refused by load_base_model.)

Every pickle and every custom module here would create a marker file if it ever ran.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import transformers.dynamic_module_utils

from evaluation.errors import ConfigError
from trainables.config import LoraConfig, ModelConfig, QuantizationConfig
from trainables.model import attach_lora, load_adapter, load_base_model, load_config

BITS16 = QuantizationConfig(bits=16)


class Payload:
    """Unpickling this creates `marker`: proof that a pickle was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"weight": Payload(marker)}))


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dir):
    return load_base_model(ModelConfig(path=str(tiny_model_dir)), BITS16)


@pytest.fixture(scope="module")
def saved_adapter(tiny_base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model = attach_lora(tiny_base, LoraConfig(r=4, target_modules="attention"), seed=0)
    model.save_pretrained(str(out), safe_serialization=True)
    model.unload()  # give the module-scoped base back without LoRA layers
    return out


def test_pickle_only_adapter_is_refused_unopened(tiny_base, saved_adapter, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copy(saved_adapter / "adapter_config.json", adapter)
    marker = tmp_path / "pickle-ran"
    plant_pickle(adapter / "adapter_model.bin", marker)
    with pytest.raises(ConfigError) as info:
        load_adapter(tiny_base, adapter)
    assert info.value.field == "adapter" and "pickle is refused" in str(info.value)
    assert not marker.exists()


def test_safetensors_adapter_loads_and_a_pickle_beside_it_is_ignored(tiny_base, saved_adapter, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(saved_adapter, adapter)
    marker = tmp_path / "pickle-ran"
    plant_pickle(adapter / "adapter_model.bin", marker)
    model = load_adapter(tiny_base, adapter)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    assert not marker.exists()
    model.unload()


def test_pickle_only_base_weights_are_refused_unopened(tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    for weights in base.glob("*.safetensors*"):
        weights.unlink()
    marker = tmp_path / "pickle-ran"
    plant_pickle(base / "pytorch_model.bin", marker)
    with pytest.raises(ConfigError) as info:
        load_base_model(ModelConfig(path=str(base)), BITS16)
    assert info.value.field == "model.path" and "safetensors" in str(info.value)
    assert not marker.exists()


@pytest.fixture
def custom_code_model(tiny_model_dir, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The tiny model plus a `modeling_custom.py` that its config asks for (auto_map) and that leaves
    a marker when imported. Dynamic modules are copied to a private HF_MODULES_CACHE."""
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    model = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, model)
    marker = tmp_path / "custom-code-ran"
    (model / "modeling_custom.py").write_text(
        "from pathlib import Path\n"
        "from transformers import LlamaForCausalLM\n"
        f"Path({str(marker)!r}).touch()\n"
        "class CustomLlama(LlamaForCausalLM):\n"
        "    pass\n"
    )
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomLlama"}
    (model / "config.json").write_text(json.dumps(config))
    return model, marker


def test_local_custom_code_is_refused_unless_allowed(custom_code_model):
    model, marker = custom_code_model
    for load in (load_config, lambda cfg: load_base_model(cfg, BITS16)):
        with pytest.raises(ConfigError) as info:
            load(ModelConfig(path=str(model)))
        assert info.value.field == "model.trust_remote_code"
    assert not marker.exists()
    allowed = load_base_model(ModelConfig(path=str(model), trust_remote_code=True), BITS16)
    assert type(allowed).__name__ == "CustomLlama" and marker.exists()  # opted in: its code ran


def test_hub_model_with_custom_code_is_refused(tmp_path, monkeypatch):
    """A hub id (here served from a local hub cache, offline) whose config needs remote code."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--evil-org--remote-code"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil-custom",
                "auto_map": {
                    "AutoConfig": "configuration_evil.EvilConfig",
                    "AutoModelForCausalLM": "modeling_evil.EvilModel",
                },
            }
        )
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read by is_offline_mode()
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    with pytest.raises(ConfigError) as info:
        load_config(ModelConfig(path="evil-org/remote-code"))
    assert info.value.field == "model.trust_remote_code", str(info.value)
    assert not (tmp_path / "hf-modules").exists()  # nothing was fetched to run
