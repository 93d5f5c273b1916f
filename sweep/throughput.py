"""How many trials should share one GPU: the count that maximises the sweep's training throughput.

Packing by memory alone put 5 trials on one H200 (issue 22), and those 5 summed 26k tokens/s where
one trial alone trains at 31.9k: without MPS, processes time-slice the GPU, so concurrency adds no
speed to the steps themselves. What it buys is overlap: while one trial loads, evaluates or
compiles (its fixed cost F), another trains. With a trial's training time T, k trials at once keep
the GPU training a fraction min(1, k T / (F + T)) of the time, and each extra trial costs the
time-slicing loss measured above. How each k would run (compiled or not, checkpointing, micro-batch,
for 1/k of the memory) comes from trainables/run_plan.py, so memory and speed are judged on the run
that will happen. The model is coarse on purpose: `plan` prints its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.human import duration, number
from trainables.run_plan import RunPlan, training_seconds

SLICE_LOSS = (1 - 26.0 / 31.9) / 4  # per extra trial: 5 at once summed 26k vs 31.9k tokens/s alone
FIXED_S = 10.0  # a trial's fixed cost on a reused worker (base held, base eval and generation shared)


@dataclass(frozen=True)
class Concurrency:
    per_gpu: int  # trials per GPU chosen
    memory_fit: int  # most trials per GPU whose run fits their share of the memory
    run: RunPlan  # how each of them runs
    train_s: float  # predicted training seconds of one trial
    fixed_s: float  # predicted fixed seconds of one trial
    busy: float  # predicted share of the GPU's time spent training at `per_gpu`

    def why(self) -> str:
        return (
            f"{self.per_gpu} per GPU (memory fits {self.memory_fit}): each {self.run.describe()}; a trial trains "
            f"~{duration(self.train_s)} after ~{duration(self.fixed_s)} of fixed cost, so {self.per_gpu} at once "
            f"keep the GPU training ~{number(100 * self.busy, 2)}% of the time (each extra trial costs "
            f"~{100 * SLICE_LOSS:.1f}% to time-slicing)"
        )


def efficiency(k: int, train_s: float, fixed_s: float) -> float:
    """Predicted training share of the GPU's time with k trials at once."""
    overlap = min(1.0, k * train_s / max(fixed_s + train_s, 1e-9))
    return overlap * (1 - SLICE_LOSS * (k - 1))


def choose(runs: dict[int, RunPlan], compile_s: float) -> Concurrency | None:
    """Among k -> the run k trials sharing a GPU would each make, the k whose runs fit with the highest
    predicted efficiency (ties: fewer trials); None when not even one fits."""
    fitting = {k: run for k, run in runs.items() if run.fits}
    if not fitting:
        return None

    def figures(k: int) -> tuple[float, float, float]:
        run = fitting[k]
        train_s = training_seconds(run)
        fixed_s = FIXED_S + (compile_s if run.compile.compile else 0.0)
        return efficiency(k, train_s, fixed_s), train_s, fixed_s

    best = max(fitting, key=lambda k: (figures(k)[0], -k))
    busy, train_s, fixed_s = figures(best)
    return Concurrency(best, max(fitting), fitting[best], train_s, fixed_s, busy)
