"""Trials bigger than one worker: the same training loop on N Ray Train workers inside a Tune trial.

Ray Train V2 (the default in Ray 2.60) no longer takes a TorchTrainer as a Tune trainable; the
documented pattern is a Tune function trial that calls `TorchTrainer.fit()`, with Tune's
`TuneReportCallback` forwarding rank 0's reports, so ASHA, resume and MLflow see a multi-worker
trial exactly like a single-worker one. Every worker runs `trainables.trial.run_trial` with the
sweep's `resources.strategy` (ddp or fsdp); workers take their share of each micro-batch and sum
gradients (see trial.py), rank 0 alone writes the adapter.
A stable Train run name per Tune trial makes a retried trial resume from its Ray Train checkpoints.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import ray.train
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from sweep.config import SweepConfig
from trainables.config import TrialConfig
from trainables.memory import grant_gpu_share
from trainables.trial import run_trial


class TrainReporter:
    """Reports through Ray Train: every rank reports (Train requires it); rank 0 attaches the checkpoint."""

    generates = False  # the sweep samples its best trial once, after it ends (sweep/samples.py)

    def restore_dir(self) -> Path | None:
        ckpt = ray.train.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt is not None else None

    def checkpoint_dir(self, step: int) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"qlora-ckpt-{step:07d}-"))

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        ctx = ray.train.get_context()
        metrics = {
            **metrics,
            "world_rank": ctx.get_world_rank(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }
        try:
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None,
            )
        finally:
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)


def _worker_loop(config: dict) -> None:
    gpu = ray.get_runtime_context().get_assigned_resources().get("GPU")
    if gpu:  # this worker's share and cap: the Tune trial's environment does not reach its process
        grant_gpu_share(gpu, config["gpu_memory_gb"])
    run_trial(TrialConfig.model_validate(config["trial"]), TrainReporter(), strategy=config["strategy"])


def per_worker_config(cfg: TrialConfig, sweep: SweepConfig) -> TrialConfig:
    """With keep_effective_batch, N workers split the configured batch; otherwise each takes a full one."""
    n = sweep.resources.workers_per_trial
    if sweep.resources.keep_effective_batch:
        return cfg
    t = cfg.training.model_copy(update={"batch_size": cfg.training.batch_size * n})
    return cfg.model_copy(update={"training": t})


def run_multi_worker_trial(cfg: TrialConfig, sweep: SweepConfig) -> None:
    """Called inside a Tune trial: fit a TorchTrainer whose workers run the trial loop."""
    res = sweep.resources
    gpu = res.gpu if res.gpu != "auto" else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
    trial_id = tune.get_context().get_trial_id()
    storage = sweep.storage()
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "trial": per_worker_config(cfg, sweep).model_dump(),
            "strategy": res.strategy,
            "gpu_memory_gb": res.gpu_memory_gb,
        },
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=res.workers_per_trial,
            use_gpu=bool(gpu),
            resources_per_worker={"CPU": res.cpu, **({"GPU": gpu} if gpu else {})},
        ),
        run_config=RunConfig(
            name=f"{sweep.name}-train-{trial_id}",
            storage_path=storage if "://" in storage else str(Path(storage) / "train"),
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.training.keep_checkpoints),
            failure_config=FailureConfig(max_failures=0),  # a dead worker fails the trial; Tune retries it
        ),
    )
    trainer.fit()
