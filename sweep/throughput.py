"""How many trials should share one GPU: the count that maximises the sweep's training throughput.

Packing by memory alone put 5 trials on one H200 (issue 22), and those 5 summed 26k tokens/s where
one trial alone trains at 31.9k: without MPS, processes time-slice the GPU, so concurrency adds no
speed to the steps themselves. What it buys is overlap: while one trial loads, evaluates or
compiles (its fixed cost F), another trains. With a trial's training time T, k trials at once keep
the GPU training a fraction min(1, k T / (F + T)) of the time, and each extra trial costs the
time-slicing loss measured above. The model is coarse on purpose: `plan` prints its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.compile_policy import COMPILE_S, COMPILE_SPEEDUP, EAGER_FLOPS, decide_compile, training_flops

SLICE_LOSS = (1 - 26.0 / 31.9) / 4  # per extra trial: 5 at once summed 26k vs 31.9k tokens/s alone
FIXED_S = 10.0  # a trial's fixed cost on a reused worker (base held, compile cached), issue 22's target


@dataclass(frozen=True)
class Concurrency:
    per_gpu: int  # trials per GPU chosen
    memory_fit: int  # trials per GPU the memory estimate allows
    train_s: float  # predicted training seconds of one trial
    fixed_s: float  # predicted fixed seconds of one trial
    busy: float  # predicted share of the GPU's time spent training at `per_gpu`

    def why(self) -> str:
        return (
            f"{self.per_gpu} per GPU (memory fits {self.memory_fit}): a trial trains ~{self.train_s:.0f}s "
            f"after ~{self.fixed_s:.0f}s of fixed cost, so {self.per_gpu} at once keep the GPU training "
            f"~{100 * self.busy:.0f}% of the time (each extra trial costs ~{100 * SLICE_LOSS:.1f}% to time-slicing)"
        )


def efficiency(k: int, train_s: float, fixed_s: float) -> float:
    """Predicted training share of the GPU's time with k trials at once."""
    overlap = min(1.0, k * train_s / max(fixed_s + train_s, 1e-9))
    return overlap * (1 - SLICE_LOSS * (k - 1))


def choose(
    memory_fit: int, n_params: int, train_tokens: int, compile_setting, packing: bool, max_per_gpu: int = 8
) -> Concurrency:
    """The trials-per-GPU count (at most `memory_fit`) with the highest predicted efficiency."""
    decision = decide_compile(compile_setting, True, packing, n_params, train_tokens)
    rate = EAGER_FLOPS * (COMPILE_SPEEDUP if decision.compile else 1.0)
    train_s = training_flops(n_params, train_tokens) / rate
    fixed_s = FIXED_S + (COMPILE_S if decision.compile else 0.0)
    limit = max(1, min(memory_fit, max_per_gpu))
    best = max(range(1, limit + 1), key=lambda k: (efficiency(k, train_s, fixed_s), -k))
    return Concurrency(best, memory_fit, train_s, fixed_s, efficiency(best, train_s, fixed_s))
