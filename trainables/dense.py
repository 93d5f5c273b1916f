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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


def _dense(module: torch.nn.Module, dtype: torch.dtype):
    """`module`'s forward over its weight dequantized once into `dtype`, computed as its own forward
    computes (the 4-bit layer in its compute dtype, the int8 path in the input's)."""
    import bitsandbytes as bnb

    from trainables.int8_matmul import dequantize_int8, int8_parts

    bias = module.bias
    if isinstance(module, bnb.nn.Linear4bit):
        state = module.weight.quant_state or getattr(module, "quant_state", None)
        w = bnb.functional.dequantize_4bit(module.weight.data, state).to(dtype)
        b = None if bias is None else bias.to(dtype)
        return lambda x: F.linear(x.to(dtype), w, b).to(x.dtype)
    cb, scale = int8_parts(module)
    w = dequantize_int8(cb, scale, dtype)

    def int8(x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, w if w.dtype == x.dtype else dequantize_int8(cb, scale, x.dtype))
        return out if bias is None else out + bias.to(out.dtype)

    return int8


@contextlib.contextmanager
def dense_weights(model: torch.nn.Module, budget: int | None = None) -> Iterator[int]:
    """Within the block, each quantized linear layer of `model` (while `budget` bytes last; default:
    `room` on the model's device) runs as a matmul of its weight dequantized once. Yields how many
    layers; restores their forwards (and frees the copies) after."""
    dtype = model.get_input_embeddings().weight.dtype
    left = room(next(model.parameters()).device) if budget is None else budget
    swapped: list[tuple[torch.nn.Module, object]] = []
    try:
        for module in model.modules():
            target = _dense_dtype(module, dtype)
            if target is None:
                continue
            size = module.in_features * module.out_features * target.itemsize
            if size > left:
                continue
            left -= size
            forward = _dense(module, target)
            swapped.append((module, module.__dict__.get("forward")))
            module.forward, forward.dense = forward, True
        yield len(swapped)
    finally:
        for module, own in swapped:
            if own is None:
                del module.forward
            else:
                module.forward = own
