"""The weight-only int8 path: same function as the dequantized bitsandbytes layer, forward and backward."""

from __future__ import annotations

import bitsandbytes as bnb
import torch

from trainables.config import TrialConfig, validate
from trainables.int8_matmul import dequantize_int8
from trainables.model import load_base_model


def _model(tiny_model_dir, int8_matmul: str):
    cfg = validate(
        TrialConfig,
        {"model": {"path": str(tiny_model_dir)}, "quantization": {"bits": 8, "int8_matmul": int8_matmul}},
    )
    return load_base_model(cfg.model, cfg.quantization, torch.device("cpu"))


def test_int8_layers_compute_with_their_dequantized_weights(tiny_model_dir) -> None:
    model = _model(tiny_model_dir, "dequantize")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert layers, "the 8-bit model has bitsandbytes int8 layers"
    layer = layers[-1]
    assert layer.weight.dtype == torch.int8  # stored as int8: the memory footprint is unchanged
    weight = dequantize_int8(layer.weight.data, layer._int8_scale, torch.float32)
    x = torch.randn(2, 5, layer.in_features, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    out = layer(x)
    ref = ref_x @ weight.t()
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_dequantized_path_agrees_with_bitsandbytes_llm_int8(tiny_model_dir) -> None:
    """Both paths compute the same layer; LLM.int8 also quantizes activations, hence the tolerance."""
    ids = torch.arange(1, 33).reshape(2, 16)
    ours = _model(tiny_model_dir, "dequantize")(input_ids=ids).logits
    theirs = _model(tiny_model_dir, "llm.int8")(input_ids=ids).logits
    assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) > 0.999
    assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max()
