"""How much of a node one trial asks Ray for: CPUs, a GPU share from the memory estimate, workers.

Several trials share one GPU when the estimate allows (Ray packs fractional GPU requests onto the
same device); a trial that needs more than one GPU runs as Ray Train workers.
"""

from __future__ import annotations

import os

import ray

from sweep.config import SweepConfig
from sweep.plan import MAX_PER_GPU, plan_rows


def gpu_memory_gb(cfg: SweepConfig) -> float:
    if cfg.resources.gpu_memory_gb:
        return cfg.resources.gpu_memory_gb
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 2**30
    except Exception:  # noqa: BLE001 - a driver without CUDA simply uses the default
        pass
    return 80.0


def auto_gpu_share(cfg: SweepConfig) -> float:
    """1/k of a GPU, k chosen for throughput within the memory fit of the heaviest combination
    (sweep/throughput.py; at most 8), from this node's measurements where it has them, else a whole GPU."""
    rows = plan_rows(cfg, gpu_memory_gb(cfg), measured=True)
    per_gpu = min(min(r["trials_per_gpu"] for r in rows), MAX_PER_GPU)
    return 1.0 / per_gpu if per_gpu >= 1 else 1.0


def gpu_share(cfg: SweepConfig) -> float:
    if cfg.resources.gpu != "auto":
        return float(cfg.resources.gpu)
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    if not gpus:
        return 0.0
    # Ray fills one GPU before the next: never pack tighter than needed to run every concurrent
    # trial, so that with 2 GPUs and 4 trials at once each GPU gets 2, not GPU 0 all 4.
    spread = min(1.0, gpus / cfg.search.max_concurrent_trials)
    return max(auto_gpu_share(cfg), spread)


def trial_resources(cfg: SweepConfig):
    """Resources of one trial: a dict for one worker, a placement group for Ray Train workers."""
    gpu = gpu_share(cfg)
    n = cfg.resources.workers_per_trial
    if n == 1:
        return {"cpu": cfg.resources.cpu, "gpu": gpu}
    # Ray Train V2: the Tune trial only runs the TorchTrainer's controller; its workers ask for the
    # real resources themselves, so the trial must not hold them (it would deadlock its own workers).
    return {"cpu": 0.1}


def concurrent_trials(cfg: SweepConfig, resources: dict | None = None) -> int:
    """search.max_concurrent_trials, capped at how many trials the cluster can run at once.

    Tune creates up to max_concurrent_trials trials at once and starts a worker for each; one that
    waits for a GPU share gets a fresh process when it frees up. Capped at what fits, the next trial
    is created only when one ends, and Tune hands it the finished trial's worker (reuse_actors), whose
    base model is still loaded (trainables/base_cache.py).
    """
    want = cfg.search.max_concurrent_trials
    # A cluster (RAY_ADDRESS) may autoscale: its present size is no bound there.
    if not ray.is_initialized() or cfg.resources.workers_per_trial > 1 or os.environ.get("RAY_ADDRESS"):
        return want
    resources = resources or trial_resources(cfg)
    total = ray.cluster_resources()
    fits = [int(total.get(key.upper(), 0) // amount + 1e-9) for key, amount in resources.items() if amount]
    return max(1, min([want, *fits]))
