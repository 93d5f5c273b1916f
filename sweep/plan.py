"""`qlora-sweep plan`: what a sweep will cost, before it runs. No Ray, no weights, seconds.

For each distinct model / LoRA / bits / batch combination the space can produce: trainable
parameters (peft on a meta-device model), the memory estimate, how many trials fit on one GPU, and
how many workers a trial needs when it does not fit one.
"""

from __future__ import annotations

import itertools
import math

from sweep.config import SweepConfig
from sweep.space import describe, trial_config
from trainables.config import ModelConfig
from trainables.memory import estimate
from trainables.model import count_trainable_params_for, load_config

SHAPE_PATHS = ("model.path", "lora.r", "lora.target_modules", "quantization.bits", "training.batch_size",
               "training.max_seq_len")


def shape_combinations(cfg: SweepConfig) -> list[dict]:
    """Every combination of the searched values that changes parameters or memory (ranges: both ends)."""
    axes = {}
    for path, dom in cfg.search.space.items():
        kind, values = next(iter(dom.items()))
        if path in SHAPE_PATHS:
            axes[path] = values if kind == "choice" else [values[0], values[1]]
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes.values())] or [{}]


def plan_rows(cfg: SweepConfig, gpu_memory_gb: float = 80.0) -> list[dict]:
    rows, configs = [], {}
    for combo in shape_combinations(cfg):
        trial = trial_config(cfg.trial_dict(), combo)
        path = trial.model.path
        if path not in configs:
            configs[path] = load_config(ModelConfig(path=path, revision=trial.model.revision))
        mc = configs[path]
        params = count_trainable_params_for(mc, trial.lora)
        fast = estimate(trial, mc, params, gradient_checkpointing=False)
        lean = estimate(trial, mc, params, gradient_checkpointing=True)
        usable = 0.9 * gpu_memory_gb
        fits = fast.total_gb <= usable or lean.total_gb <= usable
        per_gpu = max(int(usable // fast.total_gb), 1 if fits else 0)
        rows.append({
            **combo, "trainable_params": params, "est_gb": round(fast.total_gb, 2),
            "est_gb_ckpt": round(lean.total_gb, 2), "grad_ckpt": "off" if fast.total_gb <= usable else "on",
            "fits_one_gpu": fits, "trials_per_gpu": per_gpu,
            "workers_needed": _workers_needed(lean, usable),
        })
    return rows


def _workers_needed(lean, usable_gb: float) -> int | str:
    """FSDP shards the weights over workers; activations and LoRA state stay per worker."""
    if lean.total_gb <= usable_gb:
        return 1
    rest = lean.total_gb - lean.weights_gb
    return math.ceil(lean.weights_gb / (usable_gb - rest)) if usable_gb > rest else "too big"


def render_plan(cfg: SweepConfig, gpu_memory_gb: float = 80.0) -> str:
    """The plan as text: the space, then one table row per combination."""
    lines = [f"sweep {cfg.name}: {cfg.search.num_samples} trials, metric {cfg.search.metric} ({cfg.search.mode}), "
             f"max {cfg.search.max_concurrent_trials} at once", "search space:"]
    lines += [f"  {line}" for line in describe(cfg.search.space)] or ["  (none: every trial uses the base config)"]
    rows = plan_rows(cfg, gpu_memory_gb)
    keys = [k for k in SHAPE_PATHS if any(k in r for r in rows)]
    cols = keys + ["trainable_params", "est_gb", "grad_ckpt", "trials_per_gpu", "fits_one_gpu", "workers_needed"]
    table = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines.append(f"per combination (GPU of {gpu_memory_gb:g} GiB; est_gb without gradient checkpointing):")
    lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
