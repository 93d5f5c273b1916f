"""Registering the champion adapter in a real MLflow registry (sqlite) and loading it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from evaluation.errors import ConfigError
from sweep.registry import champion_version, load_champion, register_champion
from sweep.tracking import client_for
from sweep.tracking_params import base_model_tags
from trainables.checkpoint import save_checkpoint


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

    # The same run again (a resumed sweep that ended as before): no second version of it.
    again = register_champion(trained["uri"], trained["run_id"], "tiny-desc", merge=True)
    assert (again["version"], again["merged_version"]) == (out["version"], out["merged_version"])
    # Another run's adapter (a new sweep under the name): a new version, and the alias moves to it.
    exp_id = client.get_run(trained["run_id"]).info.experiment_id
    other = client.create_run(exp_id, tags={"base_model": trained["base"]}).info.run_id
    client.log_artifacts(other, str(trained["root"] / "adapter"), "adapter")
    moved = register_champion(trained["uri"], other, "tiny-desc")
    assert int(moved["version"]) == int(out["version"]) + 1
    assert champion_version(trained["uri"], "tiny-desc").version == moved["version"]
    assert client.get_model_version("tiny-desc", out["version"]).run_id == trained["run_id"]  # kept


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


def test_a_built_in_base_is_named_portably_and_loads_offline(tmp_path, tiny_model_dir, monkeypatch):
    """A trial checkpoint on the built-in tiny base, logged and registered as the tracking callback and the
    sweep do: the champion's adapter_config.json names the base portably (no path of this machine), its
    tags carry the source and (as a tag only) the local path, and load_champion puts it back on its base
    through the local cache, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora).eval()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, tokenizer, optimizer, scheduler, {"step": 1})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = client_for(uri)
    exp = client.create_experiment("builtin", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp, tags={"base_model": "tiny", **base_model_tags(ckpt)}).info.run_id
    for sub in ("adapter", "tokenizer"):
        client.log_artifacts(run_id, str(ckpt / sub), "adapter")
    client.set_terminated(run_id)

    register_champion(uri, run_id, "tiny-builtin")
    version = champion_version(uri, "tiny-builtin")
    portable = f"qlora-sweep:{tiny_model_dir.name}"
    assert version.tags["base_model_name"] == portable
    assert version.tags["base_model_path"] == str(tiny_model_dir)  # this machine's path: a tag, nowhere else
    assert "built by qlora-sweep" in version.tags["base_model_source"] and portable in version.description
    local = Path(client.download_artifacts(run_id, "adapter", str(tmp_path / "dl")))
    assert json.loads((local / "adapter_config.json").read_text())["base_model_name_or_path"] == portable
    assert json.loads((local / "base_model.json").read_text())["build"]["name"] == "tiny"
    for f in local.iterdir():
        assert str(tiny_model_dir.parent) not in f.read_bytes().decode("utf-8", "replace"), f.name

    loaded = load_champion(uri, "tiny-builtin")  # no base_model_dir: the portable name, through the cache
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=0)
