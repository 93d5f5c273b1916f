"""Registering the champion adapter in a real MLflow registry (sqlite) and loading it back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from evaluation.errors import ConfigError
from sweep.registry import champion_version, load_champion, register_champion
from sweep.tracking import client_for


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny random Llama saved as the base, and a non-zero LoRA adapter of it logged to a run."""
    root = tmp_path_factory.mktemp("registry")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(root / "base")
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, lora).eval()
    peft_model.save_pretrained(root / "adapter")
    uri = f"sqlite:///{root}/mlflow.db"
    client = client_for(uri)
    exp = client.create_experiment("reg", artifact_location=(root / "art").as_uri())
    tags = {
        "base_model": str(root / "base"),
        "base_revision": "null",
        "dataset": "sample",
        "dataset_hash": "h1",
    }
    run_id = client.create_run(exp, tags=tags).info.run_id
    client.log_param(run_id, "lora.r", "4")
    client.log_metric(run_id, "eval_loss", 1.25)
    client.log_artifacts(run_id, str(root / "adapter"), "adapter")
    client.set_terminated(run_id)
    ids = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = peft_model(input_ids=ids).logits
    return {
        "uri": uri,
        "run_id": run_id,
        "base": str(root / "base"),
        "ids": ids,
        "logits": logits,
        "root": root,
    }


def test_register_and_load_champion(trained):
    out = register_champion(trained["uri"], trained["run_id"], "tiny-desc", merge=True)
    assert out["source"] == f"runs:/{trained['run_id']}/adapter"
    version = champion_version(trained["uri"], "tiny-desc")
    assert version.version == out["version"] and version.run_id == trained["run_id"]
    assert version.tags["base_model"] == trained["base"] and version.tags["dataset_hash"] == "h1"
    assert version.tags["eval_loss"] == "1.25" and version.tags["lora.r"] == "4"
    assert "kept apart from base model" in version.description

    model = load_champion(trained["uri"], "tiny-desc", "champion", base_model_dir=trained["base"])
    with torch.no_grad():
        logits = model(input_ids=trained["ids"]).logits
    assert torch.equal(logits, trained["logits"])  # same adapter on the same base: bit-identical

    merged_version = champion_version(trained["uri"], "tiny-desc-merged")
    assert merged_version.version == out["merged_version"] and merged_version.tags["kind"] == "merged"
    client = client_for(trained["uri"])
    local = client.download_artifacts(trained["run_id"], "merged", str(trained["root"] / "dl"))
    assert (Path(local) / "model.safetensors").is_file() and not list(Path(local).glob("*.bin"))
    plain = AutoModelForCausalLM.from_pretrained(local, use_safetensors=True).eval()
    assert type(plain).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        merged_logits = plain(input_ids=trained["ids"]).logits
    assert torch.allclose(merged_logits, trained["logits"], atol=1e-5, rtol=0)
    assert not torch.equal(
        merged_logits, AutoModelForCausalLM.from_pretrained(trained["base"])(trained["ids"]).logits
    )

    again = register_champion(
        trained["uri"], trained["run_id"], "tiny-desc"
    )  # a second version moves the alias
    assert int(again["version"]) == int(out["version"]) + 1
    assert champion_version(trained["uri"], "tiny-desc").version == again["version"]


def test_errors_name_the_field(trained):
    client = client_for(trained["uri"])
    empty = client.create_run(client.get_run(trained["run_id"]).info.experiment_id).info.run_id
    with pytest.raises(ConfigError, match="run_id.*adapter"):
        register_champion(trained["uri"], empty, "nothing")
    register_champion(trained["uri"], trained["run_id"], "err-model", alias="prod")
    with pytest.raises(ConfigError, match="alias.*prod"):
        champion_version(trained["uri"], "err-model", "champion")
    with pytest.raises(ConfigError, match="model_name"):
        champion_version(trained["uri"], "never-registered")
