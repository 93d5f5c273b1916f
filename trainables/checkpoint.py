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
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

STATE = "trainer_state.json"


def save_checkpoint(path: Path, model, tokenizer, optimizer, scheduler, state: dict) -> Path:
    """Write everything needed to continue from `state['step']` into `path` (created)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path / "adapter"), safe_serialization=True)
    tokenizer.save_pretrained(str(path / "tokenizer"))
    tensors, meta = {}, {"groups": optimizer.state_dict()["param_groups"]}
    for idx, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            tensors[f"{idx}.{key}"] = (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    save_file(tensors, str(path / "optimizer.safetensors"))
    meta["scheduler"] = scheduler.state_dict()  # LambdaLR stores lr_lambdas as [None] for plain functions
    (path / STATE).write_text(json.dumps({**state, "optimizer": meta}, indent=1, default=str))
    return path


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore adapter weights, optimizer moments, scheduler and RNG; returns the saved state."""
    state = json.loads((path / STATE).read_text())
    adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, adapter)
    tensors = load_file(str(path / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.cpu"))
    device = next(p for p in model.parameters() if p.requires_grad).device
    opt_state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        opt_state.setdefault(int(idx), {})[key] = value if key == "step" else value.to(device)
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
