"""`training.compile: auto`: compile the decoder layers when the GPU time saved beats what compiling costs.

torch.compile of a decoder layer costs seconds to tens of seconds and makes each step ~2.2x faster
(OpenLLaMA-3b-v2 shape, 4-bit, one H100: 12-14k tokens/s eager, 28.3k compiled; issue 30). Eager also
needs about twice the activation memory (trainables/memory.py). A 10-step quickstart trial trains
for a second or two, so compiling it only adds the compile time.

The figures are the node's own once it has measured them (trainables/node_stats.py: every GPU trial
records its steady rate and, compiled, its compile seconds); before that, the H100 figures below.
In a sweep, k trials share a GPU: while one compiles (mostly CPU work) the others train, so the GPU
time a compile leaves idle is ~1/k of it. Training FLOPs come from the parameter count (LoRA on a
frozen base costs ~4 x params FLOPs per token: forward 2N, input gradients 2N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainables.node_stats import NodeStats

# Measured on one H100 80 GB (issue 30): eager 12-14k, compiled 28.3k tokens/s on 3.426e9 parameters;
# a compile took 25-30 s on a fresh node and 9-16 s with the node's inductor cache warm.
EAGER_FLOPS = 4 * 3.426e9 * 13_000  # FLOP/s of eager LoRA training
COMPILE_SPEEDUP = 28_300 / 13_000  # compiled / eager tokens per second
COMPILE_S = 30.0  # a first compile on a node whose compile seconds were never measured
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


def rates(stats: NodeStats | None) -> tuple[float, float, float, str]:
    """(eager FLOP/s, compiled / eager speed-up, compile seconds, where they come from)."""
    stats = stats or NodeStats()
    eager = NodeStats.median(stats.eager_flops)
    compiled = NodeStats.median(stats.compiled_flops)
    compile_s = NodeStats.median(stats.compile_s)
    base = eager or (compiled / COMPILE_SPEEDUP if compiled else EAGER_FLOPS)
    speedup = (compiled / base) if compiled and eager else COMPILE_SPEEDUP
    measured = [name for name, v in (("eager", eager), ("compiled", compiled), ("compile", compile_s)) if v]
    source = f"measured here: {', '.join(measured)}" if measured else "H100 figures"
    return base, speedup, compile_s or COMPILE_S, source


def decide_compile(
    setting: bool | str,
    on_gpu: bool,
    packing: bool,
    n_params: int,
    train_tokens: int,
    per_gpu: int = 1,
    stats: NodeStats | None = None,
) -> CompileDecision:
    """Whether to compile: `True`/`False` force it (on a GPU); 'auto' compiles when the GPU time saved
    exceeds the GPU time the compile leaves idle (compile seconds / trials sharing the GPU). Never on
    the CPU (compile would outweigh the gain there, and the CPU path is our test path)."""
    eager_rate, speedup, compile_s, source = rates(stats)
    eager = training_flops(n_params, train_tokens) / eager_rate
    saved = eager * (1 - 1 / speedup)
    if not on_gpu:
        return CompileDecision(False, "cpu: never compiled", eager, saved)
    if setting is True or setting is False:
        return CompileDecision(bool(setting), f"training.compile={str(setting).lower()}", eager, saved)
    cost = compile_s / max(per_gpu, 1)
    shared = f" / {per_gpu} sharing the GPU" if per_gpu > 1 else ""
    figures = f"~{_s(saved)} of ~{_s(eager)} eager training vs ~{_s(compile_s)} compile{shared} ({source})"
    if saved <= cost:
        return CompileDecision(False, f"auto: eager, compile would save {figures}", eager, saved)
    shapes = "static packed shapes" if packing else f"padded length buckets (x{BUCKET_MIN} powers of two)"
    return CompileDecision(True, f"auto: compiled, saves {figures}; {shapes}", eager, saved)


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def bucket_width(length: int, max_len: int) -> int:
    """The padded width of an unpacked batch whose longest row is `length`: the next power of two from
    BUCKET_MIN, capped at `max_len`, so a compiled trial sees at most ~log2(max_len / 64) + 1 shapes."""
    width = BUCKET_MIN * 2 ** max(0, math.ceil(math.log2(max(length, 1) / BUCKET_MIN)))
    return min(width, max_len)
