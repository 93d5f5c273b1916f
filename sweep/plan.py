"""`qlora-sweep plan`: what a sweep will cost, before it runs. No Ray, no weights, seconds.

For each distinct model / LoRA / bits / batch combination the space can produce: trainable
parameters (peft on a meta-device model), the memory estimate, how many trials fit on one GPU, and
how many workers a trial needs when it does not fit one.
"""

from __future__ import annotations

import itertools
import math

from evaluation.errors import ConfigError
from sweep import human
from sweep.config import SweepConfig
from sweep.space import describe, trial_config
from sweep.throughput import choose
from sweep.width import at_width, explain
from trainables.builtin_models import cache_dir
from trainables.compile_policy import rates
from trainables.config import ModelConfig, TrialConfig
from trainables.data import load_rows, prompt_for
from trainables.memory import count_params, estimate
from trainables.model import count_trainable_params_for, load_config
from trainables.node_stats import NodeStats, load_stats, stats_path
from trainables.run_plan import HEADROOM, plan_run

MAX_PER_GPU = 8
CHARS_PER_TOKEN = 4.0  # English text with a BPE vocabulary: a plan needs no tokenizer

SHAPE_PATHS = (
    "model.path",
    "lora.r",
    "lora.target_modules",
    "quantization.bits",
    "training.batch_size",
    "training.max_seq_len",
)


def shape_combinations(cfg: SweepConfig) -> list[dict]:
    """Every combination of the searched values that changes parameters or memory (ranges: both ends)."""
    axes = {}
    for path, dom in cfg.search.space.items():
        kind, values = next(iter(dom.items()))
        if path in SHAPE_PATHS:
            axes[path] = values if kind == "choice" else [values[0], values[1]]
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes.values())] or [{}]


def epoch_tokens(trial: TrialConfig) -> int | None:
    """Tokens in one epoch of the training rows, from their text (None when the data cannot be read
    here, e.g. a hub dataset offline: the plan then says so instead of failing)."""
    try:
        rows = load_rows(trial.data)
    except ConfigError:
        return None
    chars = sum(
        len(prompt_for(trial.data.template, r["product"], r["category"])) + len(r["description"])
        for r in rows
    )
    return int(chars / CHARS_PER_TOKEN * max(0, len(rows) - trial.data.eval_rows) / max(len(rows), 1))


def train_tokens(trial: TrialConfig, per_epoch: int | None) -> int:
    """Tokens one trial trains on (what its FLOPs scale with): packed steps are full rows."""
    t = trial.training
    if t.max_steps:  # unpacked rows are padded to the batch's longest: about half of max_seq_len
        return int(
            t.max_steps * t.grad_accum * t.batch_size * (t.max_seq_len if t.packing else t.max_seq_len / 2)
        )
    return int(t.epochs * (per_epoch if per_epoch is not None else 10**6))


def node_stats(model_path: str) -> NodeStats | None:
    """What this machine's GPU measured in earlier trials of a model (trainables/node_stats.py), if it
    has a GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return load_stats(stats_path(cache_dir(), torch.cuda.get_device_name(0), model_path))
    except Exception:  # noqa: BLE001 - a driver without CUDA plans from the built-in figures
        pass
    return None


def plan_rows(cfg: SweepConfig, gpu_memory_gb: float = 80.0, measured: bool = False) -> list[dict]:
    """One row per shape combination: how its trials will run and how many share a GPU (the same
    `plan_run` each trial calls for itself, for 1/k of `gpu_memory_gb` for each k), from this
    machine's measurements when `measured` (and it has a GPU), else from the built-in figures."""
    rows, configs = [], {}
    per_epoch = epoch_tokens(trial_config(cfg.trial_dict(), {}))
    for combo in shape_combinations(cfg):
        trial = trial_config(cfg.trial_dict(), combo)
        path = trial.model.path
        if path not in configs:  # each model's config, size and measurements once, not per combination
            config = load_config(ModelConfig(path=path, revision=trial.model.revision))
            configs[path] = config, count_params(config), node_stats(path) if measured else None
        mc, n_params, stats = configs[path]
        compile_s = rates(stats)[2]
        params = count_trainable_params_for(mc, trial.lora)
        tokens = train_tokens(trial, per_epoch)
        runs = {
            k: plan_run(trial, mc, n_params, params, tokens, gpu_memory_gb / k, True, k, stats)
            for k in range(1, MAX_PER_GPU + 1)
        }
        conc = choose(runs, compile_s, stats)
        run = conc.run if conc else runs[1]
        lean = estimate(trial, mc, params, gradient_checkpointing=True, compiled=run.compile.compile)
        rows.append(
            {
                **combo,
                "trainable_params": params,
                "compiled": run.compile.compile,
                "est_gb": round(run.need_gb, 2),
                "grad_ckpt": "on" if run.gradient_checkpointing else "off",
                "act_budget": run.activation_budget,
                "micro_batch": f"{run.batch_size}x{run.grad_accum}",
                "fits_one_gpu": runs[1].fits,
                "memory_fit": conc.memory_fit if conc else 0,
                "trials_per_gpu": conc.per_gpu if conc else 0,
                "workers_needed": _workers_needed(lean, HEADROOM * gpu_memory_gb),
                "why": conc.why() if conc else f"does not fit one GPU: {run.memory_reason()}",
            }
        )
    return rows


def _workers_needed(lean, usable_gb: float) -> int | str:
    """FSDP shards the weights over workers; activations and LoRA state stay per worker."""
    if lean.total_gb <= usable_gb:
        return 1
    rest = lean.total_gb - lean.weights_gb
    return math.ceil(lean.weights_gb / (usable_gb - rest)) if usable_gb > rest else "too big"


def render_plan(cfg: SweepConfig, gpu_memory_gb: float = 80.0, measured: bool = False) -> str:
    """The plan as text: the space, then one table row per combination."""
    width = cfg.search.max_concurrent_trials
    lines = [
        f"sweep {cfg.name}: {at_width(cfg, width).search.num_samples} trials, metric {cfg.search.metric} "
        f"({cfg.search.mode}), max {width} at once",
        explain(cfg, width),
        "search space:",
    ]
    lines += [f"  {line}" for line in describe(cfg.search.space)] or [
        "  (none: every trial uses the base config)"
    ]
    rows = plan_rows(cfg, gpu_memory_gb, measured)
    keys = [k for k in SHAPE_PATHS if any(k in r for r in rows)]
    cols = keys + [
        "trainable_params",
        "compiled",
        "micro_batch",
        "grad_ckpt",
        "act_budget",
        "est_gb",
        "memory_fit",
        "trials_per_gpu",
        "fits_one_gpu",
        "workers_needed",
    ]
    table = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines.append(
        f"per combination (GPU of {gpu_memory_gb:g} GiB; est_gb: peak of one trial as it will run, "
        "measured on this GPU where it ran before; act_budget: AOT autograd's activation memory budget, "
        "below 1 recomputing some activations in backward):"
    )
    lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table]
    heaviest = min(rows, key=lambda r: (r["trials_per_gpu"], -r["est_gb"]))
    lines.append(
        f"gpu: auto shares a GPU between {heaviest['trials_per_gpu']} trials (the heaviest combination): "
        f"{heaviest['why']}"
    )
    return "\n".join(lines)


def _fmt(v) -> str:
    """Counts exact with separators (the seed study's table is compared digit for digit), other
    numbers as `sweep/human.py` writes them."""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return human.number(v) if isinstance(v, float) else str(v)
