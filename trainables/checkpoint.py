"""Adapter checkpoints a trial can resume from: safetensors and JSON only, never pickle.

Layout of one checkpoint directory:
  adapter/            peft save_pretrained (adapter_model.safetensors + adapter_config.json)
  tokenizer/          so the adapter is usable on its own
  optimizer.safetensors + trainer_state.json   optimizer moments, RNG, step, scheduler, history
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainables.sharding import full, shard_like

STATE = "trainer_state.json"


def full_state(model, optimizer) -> tuple[dict[str, torch.Tensor], dict[int, dict]]:
    """The LoRA weights and optimizer moments as whole CPU tensors, ready for `save_checkpoint`.

    Under FSDP each worker holds a shard, so this all-gathers: every worker must call it, in step.
    """
    adapter = {name: full(p).detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
    moments = {idx: {key: full(v).detach().cpu() if torch.is_tensor(v) else torch.tensor(v) for key, v in values.items()}
               for idx, values in optimizer.state_dict()["state"].items()}
    return adapter, moments


def save_checkpoint(path: Path, model, tokenizer, optimizer, scheduler, state: dict,
                    gathered: tuple[dict, dict] | None = None) -> Path:
    """Write everything needed to continue from `state['step']` into `path` (created).

    `gathered` is `full_state(model, optimizer)` when the caller already collected it on every worker
    (FSDP); otherwise it is taken here.
    """
    adapter, moments = gathered or full_state(model, optimizer)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path / "adapter"), state_dict=adapter, safe_serialization=True)
    tokenizer.save_pretrained(str(path / "tokenizer"))
    tensors = {f"{idx}.{key}": value.contiguous() for idx, values in moments.items() for key, value in values.items()}
    tensors["rng.cpu"] = torch.get_rng_state()
    save_file(tensors, str(path / "optimizer.safetensors"))
    meta = {"groups": optimizer.state_dict()["param_groups"],
            "scheduler": scheduler.state_dict()}  # LambdaLR stores lr_lambdas as [None] for plain functions
    (path / STATE).write_text(json.dumps({**state, "optimizer": meta}, indent=1, default=str))
    return path


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore adapter weights, optimizer moments, scheduler and RNG; returns the saved state.

    The files hold whole tensors; under FSDP every worker reads them and keeps its own shard.
    """
    state = json.loads((path / STATE).read_text())
    suffix = f".{model.active_adapter}"  # peft drops the adapter name from the saved keys
    own = {name.replace(suffix, ""): p for name, p in model.named_parameters() if p.requires_grad}
    adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    if adapter.keys() != own.keys():
        raise ValueError(f"{path}: adapter does not match the model's LoRA weights "
                         f"({sorted(adapter.keys() ^ own.keys())[:4]} ...)")
    with torch.no_grad():
        for key, value in adapter.items():
            own[key].copy_(shard_like(own[key], value))
    tensors = load_file(str(path / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.cpu"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    opt_state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        opt_state.setdefault(int(idx), {})[key] = value if key == "step" else shard_like(params[int(idx)], value)
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
    steps = sorted((p for p in parent.glob("step-*") if (p / STATE).is_file()), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else None
