"""`training.compile: auto`: compile the decoder layers only when the time saved beats the compile time.

torch.compile of one decoder layer costs tens of seconds on its first shape and makes each step
~1.9x faster (OpenLLaMA-3b-v2 shape, all-linear 4-bit, one H200: 17.1k tokens/s eager, 31.9k
compiled; benchmarks/RESULTS.md). A 10-step quickstart trial trains for a second or two, so compiling
it only adds the compile time (issue 24: 40-72 s per trial on an H200, most of it compilation).
The decision needs no weights: training FLOPs from the parameter count (LoRA on a frozen base costs
~4 x params FLOPs per token: forward 2N, input gradients 2N), at a measured eager rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Measured on one H200 (benchmarks/RESULTS.md); on slower GPUs a trial takes longer, so compiling pays
# sooner than these predict: the policy errs towards eager, never towards a compile that cannot pay.
EAGER_FLOPS = 4 * 3.426e9 * 17_121  # FLOP/s of eager LoRA training (1-worker DDP row, compile off)
COMPILE_SPEEDUP = 31_900 / 17_121  # compiled / eager tokens per second, same row
COMPILE_S = 30.0  # first compile of a decoder layer's forward and backward (25-30 s seen on an H100)
BUCKET_MIN = 64  # narrowest padded width of an unpacked batch


@dataclass(frozen=True)
class CompileDecision:
    compile: bool
    reason: str
    eager_train_s: float  # predicted training seconds without compile
    saved_s: float  # predicted seconds saved by compiling, before paying for it


def training_flops(n_params: int, tokens: int) -> float:
    """FLOPs of LoRA training over `tokens` tokens on a frozen base of `n_params` parameters."""
    return 4.0 * n_params * tokens


def decide_compile(
    setting: bool | str, on_gpu: bool, packing: bool, n_params: int, train_tokens: int
) -> CompileDecision:
    """Whether to compile: `True`/`False` force it (on a GPU); 'auto' compiles when shapes are static
    and the predicted time saved exceeds the compile time. Never on the CPU (compile would outweigh
    the gain there, and the CPU path is our test path)."""
    eager = training_flops(n_params, train_tokens) / EAGER_FLOPS
    saved = eager * (1 - 1 / COMPILE_SPEEDUP)
    if not on_gpu:
        return CompileDecision(False, "cpu: never compiled", eager, saved)
    if setting is True or setting is False:
        return CompileDecision(bool(setting), f"training.compile={str(setting).lower()}", eager, saved)
    if saved <= COMPILE_S:
        return CompileDecision(
            False,
            f"auto: eager, compile would save ~{saved:.0f}s of ~{eager:.0f}s training for ~{COMPILE_S:.0f}s",
            eager,
            saved,
        )
    shapes = "static packed shapes" if packing else f"padded length buckets (x{BUCKET_MIN} powers of two)"
    return CompileDecision(
        True,
        f"auto: compiled, saves ~{saved:.0f}s of ~{eager:.0f}s training for ~{COMPILE_S:.0f}s ({shapes})",
        eager,
        saved,
    )


def bucket_width(length: int, max_len: int) -> int:
    """The padded width of an unpacked batch whose longest row is `length`: the next power of two from
    BUCKET_MIN, capped at `max_len`, so a compiled trial sees at most ~log2(max_len / 64) + 1 shapes."""
    width = BUCKET_MIN * 2 ** max(0, math.ceil(math.log2(max(length, 1) / BUCKET_MIN)))
    return min(width, max_len)
