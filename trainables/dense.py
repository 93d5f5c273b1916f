"""Quantized layers decoded as plain matmuls of weights dequantized once, for a generation.

Generation is launch-bound: every new token runs each layer on a few rows, and a bitsandbytes layer
dequantizes its whole weight (4-bit) or runs its int8 path for each of those steps. On an H100 the
3B e2e base decoded 16 rows x 96 tokens in 4.7 s quantized and in 2.6 s with its weights dequantized
once (8-bit: 6.6 s -> 4.4 s; `benchmarks/gen_probe.py`, RESULTS.md). The dense copy costs memory (2
bytes a weight in bf16: ~5 GB for a 3B base), so layers are dequantized only while the device has room,
keeping a reserve, in the dtype each layer computes in; the others stay quantized. Numerics: an 8-bit
layer computes exactly what `trainables/int8_matmul.py` computes (layers on bitsandbytes' own LLM.int8
path stay quantized); a 4-bit layer the same weights, which bitsandbytes' own kernel may sum in another
order (greedy text can differ where two tokens tie in bf16).

An adapter over a dense layer is merged into that layer's copy (W + scaling x B @ A, peft's own
`get_delta_weight`): a launch-bound decode step then runs one matmul per layer instead of three (the
e2e's samples took 7.8-14 s to generate on an H100, where the base's pass alone takes ~2.6 s; issue 30).
The merged sum is in the copy's dtype, as a merged adapter computes (peft's `merge_and_unload`); text can
differ from the unmerged adapter's where two tokens tie. A layer whose adapters are disabled (the base's
pass) or of a kind peft does not merge as a plain delta (DoRA and the other variants, a LoRA bias) is not
merged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

RESERVE = 2 << 30  # bytes left free for activations and the KV cache


def room(device: torch.device) -> int:
    """Bytes a dense copy may take on `device`: what is free, within a per-process cap (on a CPU: the
    container's memory limit), less RESERVE."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.8
        fraction = get_fraction(device) if get_fraction else 1.0
        return int(min(free, fraction * total - torch.cuda.memory_reserved(device))) - RESERVE
    import psutil

    free = psutil.virtual_memory().available
    try:  # cgroup v2: a container's limit, which psutil's host-wide figure does not see
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        free = min(free, int(limit) - used) if limit != "max" else free
    except (OSError, ValueError):
        pass
    return free - RESERVE


def _dense_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype `module`'s dense copy would be in, or None where it gets none: not a quantized layer,
    or an 8-bit one on bitsandbytes' LLM.int8 path (`int8_matmul: llm.int8`), whose quantized
    activations a plain matmul would not reproduce."""
    import bitsandbytes as bnb

    from trainables.int8_matmul import int8_parts

    if isinstance(module, bnb.nn.Linear4bit):
        return module.compute_dtype or dtype
    if isinstance(module, bnb.nn.Linear8bitLt) and int8_parts(module) is not None:
        return dtype
    return None


def _mergeable(lora: torch.nn.Module) -> list[str] | None:
    """The adapters a peft LoRA layer would add to its base layer's output now, when each is a plain
    delta peft can merge; None when the layer would compute anything else (see the module docstring)."""
    active = list(lora.active_adapters)
    if lora.disable_adapters or lora.merged or not active:
        return None
    plain = all(
        a in lora.lora_A
        and a not in getattr(lora, "lora_variant", {})
        and not getattr(lora, "lora_bias", {}).get(a)
        for a in active
    )
    return active if plain else None


@torch.no_grad()  # the copy (and a merged delta) carries no autograd history, trainable adapter or not
def _dense(
    module: torch.nn.Module,
    dtype: torch.dtype,
    lora: torch.nn.Module | None = None,
    adapters: Iterable[str] = (),
):
    """`module`'s forward over its weight dequantized once into `dtype`, computed as its own forward
    computes (the 4-bit layer in its compute dtype, the int8 path in the input's); with `lora` (the peft
    layer wrapping it), that layer's forward, its `adapters` (`_mergeable`'s) merged into the copy."""
    import bitsandbytes as bnb

    from trainables.int8_matmul import dequantize_int8, int8_parts

    bias = module.bias
    if isinstance(module, bnb.nn.Linear4bit):
        state = module.weight.quant_state or getattr(module, "quant_state", None)
        w = bnb.functional.dequantize_4bit(module.weight.data, state).to(dtype)
    else:
        cb, scale = int8_parts(module)
        w = dequantize_int8(cb, scale, dtype)
    for adapter in adapters:
        w += lora.get_delta_weight(adapter).to(dtype)
    if isinstance(module, bnb.nn.Linear4bit) or lora is not None:
        b = None if bias is None else bias.to(dtype)
        return lambda x: F.linear(x.to(dtype), w, b).to(x.dtype)

    def int8(x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, w if w.dtype == x.dtype else dequantize_int8(cb, scale, x.dtype))
        return out if bias is None else out + bias.to(out.dtype)

    return int8


@contextlib.contextmanager
def dense_weights(model: torch.nn.Module, budget: int | None = None) -> Iterator[int]:
    """Within the block, each quantized linear layer of `model` (while `budget` bytes last; default:
    `room` on the model's device) runs as a matmul of its weight dequantized once, its enabled LoRA
    adapters merged in. Yields how many layers; restores their forwards (and frees the copies) after."""
    from peft.tuners.lora import LoraLayer

    dtype = model.get_input_embeddings().weight.dtype
    left = room(next(model.parameters()).device) if budget is None else budget
    swapped: list[tuple[torch.nn.Module, object]] = []
    done: set[int] = (
        set()
    )  # layers already run dense (a base layer by its LoRA layer: modules() is pre-order)
    try:
        for module in model.modules():
            adapters = _mergeable(module) if isinstance(module, LoraLayer) else None
            wrapper = module if adapters else None
            layer = module.get_base_layer() if wrapper is not None else module
            target = _dense_dtype(layer, dtype)
            if target is None or id(module) in done:
                continue
            size = layer.in_features * layer.out_features * target.itemsize
            if size > left:
                continue
            left -= size
            forward = _dense(layer, target, wrapper, adapters or ())
            done.add(id(layer))
            swapped.append((module, module.__dict__.get("forward")))
            module.forward, forward.dense = forward, True
        yield len(swapped)
    finally:
        for module, own in swapped:
            if own is None:
                del module.forward
            else:
                module.forward = own
