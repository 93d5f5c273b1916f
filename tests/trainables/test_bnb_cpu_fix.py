"""Regression test for the bitsandbytes 0.50.2 CPU bug (see trainables/bnb_cpu_fix.py)."""

import pytest
import torch
from bitsandbytes.functional import dequantize_4bit
from bitsandbytes.nn import Linear4bit

from trainables.bnb_cpu_fix import disable_cpu_weight_repacking


def _layer(seed=0):
    torch.manual_seed(seed)
    dense = torch.nn.Linear(128, 64, bias=False)
    layer = Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = type(layer.weight)(dense.weight.data.clone(), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")  # quantizes
    return layer


def _input_grad_after_eval(layer) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(8, 128)
    layer.eval()
    with torch.no_grad():
        layer(x)  # the eval pass that triggers the in-place repack
    layer.train()
    x = x.clone().requires_grad_(True)
    grad_out = torch.randn(8, 64)
    layer(x).backward(grad_out)
    w = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    return x.grad, grad_out @ w


def test_input_gradient_after_eval_matches_dequantized_reference():
    layer = _layer()
    assert disable_cpu_weight_repacking(torch.nn.Sequential(layer)) == 1
    got, want = _input_grad_after_eval(layer)
    assert got is not None
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


def test_workaround_is_still_needed():
    """Fails loudly if upstream fixes the bug, so the workaround gets removed rather than kept forever."""
    layer = _layer()
    got, want = _input_grad_after_eval(layer)
    if not open("/proc/cpuinfo").read().count("avx512_bf16"):
        pytest.skip("this CPU lacks AVX512-BF16: the buggy repack path never runs here")
    assert got is None or not torch.allclose(got, want, rtol=1e-3, atol=1e-3), (
        "bitsandbytes no longer corrupts 4-bit gradients after eval: remove trainables/bnb_cpu_fix.py"
    )
