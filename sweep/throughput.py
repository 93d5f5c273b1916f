"""How many trials should share one GPU: the count that maximises the sweep's training throughput.

Packing by memory alone put 5 trials on one H200 (issue 22), and those 5 summed 26k tokens/s where
one trial alone trains at 31.9k: without MPS, processes time-slice the GPU. Yet 3 compiled trials on
one H100 summed 114% of one alone (issue 30: a lone trial leaves the GPU idle between its kernels).
What sharing surely buys is overlap: while one trial loads, evaluates or compiles (its fixed cost
F), another trains. With a trial's training time T, k trials at once keep the GPU training a fraction
min(1, k T / (F + T)) of the time, times what k trials train together relative to one alone: this
node's measurement for k where it has one (every shared compiled trial records its rate,
trainables/node_stats.py), else a loss per extra trial from the H200 figure. How each k would run
(compiled or not, checkpointing, micro-batch, for 1/k of the memory) comes from trainables/run_plan.py,
so memory and speed are judged on the run that will happen, including what a run gives up to fit a
smaller share (eager, a lean activation budget, checkpointing, a smaller micro-batch: its speed). The
model is coarse on purpose: `plan` prints its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.human import duration, number
from trainables.node_stats import NodeStats
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
    busy: float  # predicted training throughput of the GPU at `per_gpu`, relative to one trial alone
    gain: float  # what `per_gpu` trials train together relative to one alone
    gain_measured: bool  # `gain` measured on this node (else the built-in time-slicing loss)

    def why(self) -> str:
        sharing = (
            f"{self.per_gpu} at once measured here training at {number(100 * self.gain, 3)}% of one alone"
            if self.gain_measured
            else f"each extra trial costs ~{100 * SLICE_LOSS:.1f}% to time-slicing"
        )
        slower = f" ({self.run.slowdown:.2f}x as long as its fastest run)" if self.run.slowdown > 1 else ""
        return (
            f"{self.per_gpu} per GPU (memory fits {self.memory_fit}): each {self.run.describe()}; a trial trains "
            f"~{duration(self.train_s)}{slower} after ~{duration(self.fixed_s)} of fixed cost, so {self.per_gpu} at once "
            f"keep the GPU training at ~{number(100 * self.busy, 2)}% of one trial's rate ({sharing})"
        )


def efficiency(k: int, train_s: float, fixed_s: float, gain: float, speed: float = 1.0) -> float:
    """Predicted training throughput of a GPU with k trials at once, relative to one trial alone at its
    fastest (compiled, nothing given up): the share of the time some trial trains, times what k trials
    train together (`gain`), times the rate of each one's run relative to that fastest (`speed`: an
    eager run, or one that gives up speed to fit its share, trains longer and keeps the GPU busy
    without training more tokens)."""
    return min(1.0, k * train_s / max(fixed_s + train_s, 1e-9)) * gain * speed


def choose(runs: dict[int, RunPlan], compile_s: float, stats: NodeStats | None = None) -> Concurrency | None:
    """Among k -> the run k trials sharing a GPU would each make, the k whose runs fit with the highest
    predicted throughput (ties: fewer trials); None when not even one fits. What k compiled trials
    train together comes from this node's measurements where it has them (`NodeStats.sharing_gain`)."""
    fitting = {k: run for k, run in runs.items() if run.fits}
    if not fitting:
        return None

    def figures(k: int) -> tuple[float, float, float, float, bool]:
        run = fitting[k]
        train_s = training_seconds(run)
        fixed_s = FIXED_S + (compile_s if run.compile.compile else 0.0)
        measured = stats.sharing_gain(k) if stats and k > 1 and run.compile.compile else None
        gain = measured if measured is not None else 1 - SLICE_LOSS * (k - 1)
        c = run.compile  # its fastest: compiled, or eager where this node measured compile no faster
        speed = min(c.eager_train_s, c.eager_train_s - c.saved_s) / max(train_s, 1e-9)
        return (
            efficiency(k, train_s, fixed_s, gain, speed),
            train_s,
            fixed_s,
            gain,
            measured is not None,
        )

    best = max(fitting, key=lambda k: (figures(k)[0], -k))
    busy, train_s, fixed_s, gain, measured = figures(best)
    return Concurrency(best, max(fitting), fitting[best], train_s, fixed_s, busy, gain, measured)
