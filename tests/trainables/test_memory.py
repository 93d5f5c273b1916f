"""The memory estimator against peaks measured on an H100, and its shape in the knobs it sees.

The measured peaks come from benchmarks/RESULTS.md (OpenLLaMA-3b-v2 shape, packed micro-batches,
flex attention, compiled layers, bf16 autocast); torch's allocated peak does not include the CUDA
context, which the estimate does, so the context is added to the measured side.
"""

from __future__ import annotations

import pytest
from helpers import OPEN_LLAMA
from transformers import AutoConfig

from trainables.config import TrialConfig
from trainables.memory import CUDA_CONTEXT_GB, estimate
from trainables.model import count_trainable_params_for

OPEN_LLAMA_3B = AutoConfig.from_pretrained(OPEN_LLAMA)
# (targets, bits, dropout, micro-batch rows, int8 path) -> torch.cuda.max_memory_allocated in GiB on an
# H100, benchmarks/RESULTS.md: the first session's rows (8 x 512, dropout 0.05, LLM.int8) and this
# session's defaults (16 x 512, dropout 0, dequantized int8).
MEASURED = [
    ("all-linear", 4, 0.05, 8, "llm.int8", 19.15),
    ("all-linear", 4, 0.0, 8, "llm.int8", 13.74),
    ("attention", 4, 0.05, 8, "llm.int8", 12.50),
    ("all-linear", 8, 0.05, 8, "llm.int8", 31.12),
    ("all-linear", 4, 0.0, 16, "dequantize", 23.31),
    ("attention", 4, 0.0, 16, "dequantize", 18.34),
    ("all-linear", 8, 0.0, 16, "dequantize", 24.76),
]


def _cfg(
    targets: str = "all-linear", bits: int = 4, dropout: float = 0.05, int8: str = "llm.int8", **training
) -> TrialConfig:
    return TrialConfig.model_validate(
        {
            "lora": {"r": 8, "target_modules": targets, "dropout": dropout},
            "quantization": {"bits": bits, "int8_matmul": int8},
            "training": {"batch_size": 8, "grad_accum": 2, **training},
        }
    )


def _estimate(cfg: TrialConfig, checkpointing: bool = False) -> float:
    trainable = count_trainable_params_for(OPEN_LLAMA_3B, cfg.lora)
    return estimate(cfg, OPEN_LLAMA_3B, trainable, checkpointing).total_gb


@pytest.mark.parametrize(("targets", "bits", "dropout", "rows", "int8", "peak"), MEASURED)
def test_estimate_is_within_20_percent_of_measured_peaks(
    targets: str, bits: int, dropout: float, rows: int, int8: str, peak: float
) -> None:
    predicted = _estimate(_cfg(targets, bits, dropout, int8, batch_size=rows))
    assert abs(predicted / (peak + CUDA_CONTEXT_GB) - 1) <= 0.20, (predicted, peak)


def test_estimate_grows_with_what_it_should() -> None:
    base = _estimate(_cfg())
    assert _estimate(_cfg(batch_size=16, grad_accum=1)) > base  # more tokens per micro-batch
    assert _estimate(_cfg(bits=8)) > base  # wider weights, LLM.int8 layers keep their inputs
    assert _estimate(_cfg(bits=8, int8="dequantize")) < _estimate(_cfg(bits=8))  # only the int8 weights kept
    assert _estimate(_cfg(dropout=0.0)) < base  # no dropped copies of the adapted inputs
    assert _estimate(_cfg(targets="attention")) < base  # fewer adapters, MLP inputs not kept
    assert _estimate(_cfg(), checkpointing=True) < base / 2  # one layer's activations live at a time
