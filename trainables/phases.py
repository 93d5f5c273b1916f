"""Where a trial's seconds go: wall-clock time per phase (load, compile, train, eval, ...).

A sweep's speed is decided by what a trial does besides training (issue 22: ~45 s of fixed cost
per trial against ~15 s of steady steps), so every trial measures its phases and reports them as
`phase_<name>_s` metrics. GPU work is asynchronous: a phase ends with a device synchronisation, so
the kernels it queued are charged to it and not to the next phase.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

# In the order a trial runs them. "first_step" is the first optimizer step: on a GPU with compile on
# it holds the compilation (torch.compile compiles lazily, on the first call), after "compile_wait",
# the wait for the GPU's compile turn (trainables/gpu_peers.py).
PHASES = (
    "data",
    "load",
    "lora",
    "base_eval",
    "compile_wait",
    "first_step",
    "train",
    "eval",
    "generation",
    "judge",
    "checkpoint",
    "report",
)


class PhaseTimer:
    """Accumulates seconds per phase; `fixed_s` is everything but steady-state training."""

    def __init__(self, device: torch.device | None = None, seconds: dict[str, float] | None = None):
        self.device = device
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; one of {', '.join(PHASES)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        """`phase_<name>_s` for every phase so far, plus `fixed_s` (all but the steady `train` phase)."""
        out = {f"phase_{name}_s": round(self.seconds.get(name, 0.0), 4) for name in PHASES}
        out["fixed_s"] = round(sum(v for k, v in self.seconds.items() if k != "train"), 4)
        return out


def describe(metrics: dict) -> str:
    """One line for a person: the fixed seconds by phase, then the steady training, then the compile
    decision, e.g. `time: 6.1s fixed (data 0.4, load 1.2, ...) + 40.2s training at 31,268 tokens/s`."""
    parts = [
        f"{name} {metrics[f'phase_{name}_s']:.1f}"
        for name in PHASES
        if name != "train" and metrics.get(f"phase_{name}_s", 0) >= 0.05
    ]
    line = (
        f"time: {metrics.get('fixed_s', 0):.1f}s fixed ({', '.join(parts)}) + {metrics.get('phase_train_s', 0):.1f}s "
        f"training at {metrics.get('train_tokens_per_s', 0):,.0f} tokens/s"
    )
    if metrics.get("run_plan"):  # how it ran: compile, checkpointing, micro-batch (trainables/run_plan.py)
        line += f"\nran {metrics['run_plan']}"
    elif metrics.get("compile_reason"):
        line += f"; compile {metrics['compile_reason']}"
    return line + ("; base model reused from the last trial" if metrics.get("base_reused") else "")
