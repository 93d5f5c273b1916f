"""The frozen base model, kept in memory for the next trial that runs in the same process.

A sweep's trials share their base: loading and quantizing it is most of a trial's fixed cost
(issue 22). With Ray Tune's actor reuse, one worker process runs trial after trial, so the trial
hands its base back here when it ends (adapter removed, hooks and compiled wrappers undone) and the
next trial with the same model and quantization takes it instead of loading it again. Only one base
is held: a trial that needs another one frees it first, so a worker never holds two.

The base is frozen and LoRA starts from a seeded init, so a trial on a reused base trains exactly as
in a fresh process (tests/trainables/test_base_cache.py checks the eval loss).
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field

import torch
from torch._dynamo.utils import counters

from trainables.config import ModelConfig, QuantizationConfig
from trainables.model import load_base_model


@dataclass
class _Held:
    key: str | None = None
    model: object | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"loads": 0, "reuses": 0})
    graphs_at_reset: int = 0  # dynamo's graph count when its caches were last emptied
    activation_budget: float = 1.0  # AOT autograd's, when this process's kept graphs were compiled


_HELD = _Held()
MAX_KEPT_GRAPHS = 8  # graphs a worker compiles before it drops them (dynamo's limit per code: 8 or more)


def base_key(model: ModelConfig, q: QuantizationConfig, device: torch.device, attn: str) -> str:
    return json.dumps([model.model_dump(), q.model_dump(), str(device), attn], sort_keys=True)


def acquire_base(
    model: ModelConfig, q: QuantizationConfig, device: torch.device, attn: str, shardable: bool = False
):
    """(base model, reused?): the held base if it matches, else a freshly loaded one. FSDP bases
    (`shardable`) are sharded in place by the trial, so they are never held or reused."""
    key = base_key(model, q, device, attn)
    if not shardable and _HELD.key == key and _HELD.model is not None:
        held, _HELD.key, _HELD.model = _HELD.model, None, None
        _HELD.counts["reuses"] += 1
        return held, True
    drop_held()
    _HELD.counts["loads"] += 1
    return load_base_model(model, q, device, shardable=shardable, attn_implementation=attn), False


def release_base(
    peft_model, model: ModelConfig, q: QuantizationConfig, device: torch.device, attn: str
) -> None:
    """Take the adapter off `peft_model` and hold its base for the next trial of this process."""
    base = peft_model.unload()  # peft puts every original (quantized) layer back, unmerged
    if getattr(base, "is_gradient_checkpointing", False):
        base.gradient_checkpointing_disable()
    if hasattr(base, "disable_input_require_grads"):
        base.disable_input_require_grads()
    compiled = False
    for module in base.modules():  # nn.Module.compile() wraps a module's call; undo it
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl, compiled = None, True
    if compiled:
        forget_graphs_if_many()
    base.train(False)
    _HELD.key, _HELD.model = base_key(model, q, device, attn), base


def forget_graphs_if_many() -> None:
    """Keep this process's compiled graphs for its next trials, unless many have piled up.

    Dynamo guards a graph on what it depends on (the modules' types and shapes, LoRA's scaling, the
    dropout modules), not on the parameter objects: the next trial with the same shape (another
    learning rate or seed) runs the graph compiled before, with no compile at all, and a trial of
    another shape (rank, alpha, dropout) compiles its own (tests/trainables/test_base_cache.py). Each
    is a cache entry of the decoder layer's code, so once MAX_KEPT_GRAPHS graphs were compiled (dynamo's
    count: graph breaks would count too) all are dropped at once, before dynamo's per-code limit
    would send new shapes to eager."""
    if counters["stats"]["unique_graphs"] - _HELD.graphs_at_reset >= MAX_KEPT_GRAPHS:
        _forget_graphs()


def _forget_graphs() -> None:
    torch._dynamo.reset()
    _HELD.graphs_at_reset = counters["stats"]["unique_graphs"]


def use_activation_budget(budget: float) -> None:
    """Compile this trial's graphs at AOT autograd's activation memory budget (trainables/run_plan.py).

    The budget decides which activations a compiled graph saves for backward, but dynamo does not guard
    on it: a graph kept from a trial at another budget would run with that trial's memory. So the kept
    graphs are dropped when the budget changes (a trial of the same shape at the same budget keeps them)."""
    import torch._functorch.config as functorch_config

    if budget != _HELD.activation_budget:
        _forget_graphs()
        _HELD.activation_budget = budget
    functorch_config.activation_memory_budget = budget


def drop_held() -> None:
    """Free the held base (a trial that failed midway never hands its base back)."""
    if _HELD.model is None:
        return
    _HELD.key, _HELD.model = None, None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def counts() -> dict[str, int]:
    """Bases loaded and reused by this process (tests and the trial's metrics read them)."""
    return dict(_HELD.counts)
