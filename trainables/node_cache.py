"""Results about a base model that every process of a node can share: a JSON file per key in the
node's cache (cache_dir()/kind/<hash of key>.json), written once under a file lock.

Trials and the sweep's sampler (sweep/samples.py) each ask for the same things about one base: its
eval loss on the sweep's eval rows, and its outputs for the fixed sample prompts. The first process
to need one computes it; the others, in this sweep or a later one on the node, read it (issue 30:
the base's samples took 6-13 s of a 3B sweep's end on an H100, every time).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from trainables.builtin_models import cache_dir
from trainables.config import TrialConfig
from trainables.model import weights_identity

BASE_GENERATIONS_VERSION = 1  # bump when generation changes what a base's outputs are


def node_cache_path(kind: str, key: list) -> Path:
    """Where a result that every process of a node shares is kept: cache_dir()/kind/<hash of key>.json."""
    path = cache_dir() / kind / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def node_cached(path: Path, compute: Callable[[], object]) -> tuple[object, bool]:
    """The value at `path`, computed by the first process to get here (under a file lock, so trials
    started together compute it once); also whether it was there already."""
    with FileLock(str(path) + ".lock"):
        shared = path.is_file()
        if not shared:
            path.write_text(json.dumps(compute()))
        return json.loads(path.read_text()), shared


def base_identity(cfg: TrialConfig, model) -> list:  # noqa: ANN001 - a torch model
    """What a cached result about a base model depends on, whatever it measures: the model, its weight
    files, its quantization, the dtype and device it computes in ("auto" in the config resolves to
    bfloat16 on a GPU and float32 on the CPU) and the libraries whose numerics it goes through."""
    return [
        cfg.model.model_dump(),
        weights_identity(cfg.model),
        cfg.quantization.model_dump(),
        str(model.dtype),
        next(model.parameters()).device.type,
        {m: importlib.metadata.version(m) for m in ("torch", "transformers", "bitsandbytes", "peft")},
    ]


def base_generations_path(cfg: TrialConfig, model, prompts: list[str]) -> Path:  # noqa: ANN001 - a torch model
    """Where the base model's outputs for `prompts` are kept: the same for a judged trial (adapter
    disabled) and the sampler (the bare base), since both generate with the base's weights alone."""
    key = [BASE_GENERATIONS_VERSION, *base_identity(cfg, model), cfg.generation.model_dump(), prompts]
    return node_cache_path("base_generations", key)
