"""8-bit base layers computed as bf16 matmuls of their dequantized int8 weights (weight-only int8).

bitsandbytes' LLM.int8 path quantizes every activation row to int8, splits out outlier columns into an
fp16 matmul and keeps its int8 inputs for backward: on an H100 it ran 3x slower than 4-bit QLoRA and
took 60% more memory (benchmarks/RESULTS.md). Here the weights stay int8 in memory (the same footprint)
and each forward and backward dequantizes one layer's weights (row scale / 127, as bitsandbytes'
own backward does) and runs a plain matmul in the compute dtype. Nothing but the int8 weights is kept
for backward, activations are never quantized (more accurate than LLM.int8), and under torch.compile
the dequantization is one fused kernel. The int8 tensors and row scales are read from the
bitsandbytes layer once; `state_dict`, peft and merging see the layer unchanged.
"""

from __future__ import annotations

import types

import bitsandbytes as bnb
import torch
import torch.nn.functional as F


def dequantize_int8(cb: torch.Tensor, scb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int8 weight [out, in] with per-row absmax `scb` -> weight in `dtype` (computed in fp32)."""
    return (cb.float() * (scb.float() / 127.0).unsqueeze(1)).to(dtype)


class _Int8Linear(torch.autograd.Function):
    """y = x @ dequant(W).T; the frozen weight gets no gradient, so backward needs only W again.

    Backward dequantizes in the gradient's dtype, as bitsandbytes' own int8 backward does. That is
    also what keeps memory flat under torch.compile: were both dequantizations the same ops, the
    compiler would merge them and keep every layer's bf16 weight alive from forward to backward
    (+6 GiB on the reference job, seen on an H100).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, cb: torch.Tensor, scb: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cb, scb)
        return F.linear(x, dequantize_int8(cb, scb, x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cb, scb = ctx.saved_tensors
        weight = cb.to(grad.dtype) * (scb / 127.0).to(grad.dtype).unsqueeze(1)
        grad_x = grad.reshape(-1, grad.shape[-1]) @ weight
        return grad_x.view(*grad.shape[:-1], weight.shape[1]), None, None


def _forward(self, x: torch.Tensor) -> torch.Tensor:
    out = _Int8Linear.apply(x, self._int8_weight, self._int8_scale)
    return out if self.bias is None else out + self.bias.to(out.dtype)


def int8_parts(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The int8 weight and row scales of a layer `use_dequantized_int8` routed; None for any other layer
    (one on bitsandbytes' own LLM.int8 path included)."""
    cb = getattr(module, "_int8_weight", None)
    return None if cb is None else (cb, module._int8_scale)


def use_dequantized_int8(model: torch.nn.Module) -> int:
    """Route every bitsandbytes 8-bit linear layer of `model` through `_Int8Linear`; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            scale = module.state.SCB if module.state.SCB is not None else module.weight.SCB
            module._int8_weight = module.weight.data  # plain tensors: no Parameter subclass under compile
            module._int8_scale = scale
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count
