"""What runs inside a Ray Tune trial: the trial config for the sampled point, a reporter that hands
metrics and checkpoints to Ray, and the retry policies a long sweep needs (out of memory, disk full).
Unless the sweep runs verbose, the trial's output goes to its own log (`sweep/console.py`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from sweep.config import SweepConfig
from sweep.console import LOG_NAME, trial_dir, trial_log
from sweep.gpu_usage import GpuSampler
from sweep.space import trial_config
from trainables.config import TrialConfig
from trainables.memory import grant_gpu_share

log = logging.getLogger(__name__)


class TuneReporter:
    """Reports to Ray Tune; checkpoints are written to a temp dir that Ray copies into storage."""

    generates = False  # a sweep generates samples once, after it ends (sweep/samples.py), unless judged

    def __init__(self, sweep: SweepConfig, share: float, usage: GpuSampler | None = None):
        self.sweep, self.share, self.usage = sweep, share, usage

    def restore_dir(self) -> Path | None:
        ckpt = tune.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt is not None else None

    def checkpoint_dir(self, step: int) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"qlora-ckpt-{step:07d}-"))

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        metrics = {
            **metrics,
            "trial_id": tune.get_context().get_trial_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": ",".join(map(str, ray.get_gpu_ids())),
            "wall_time": time.time(),
            # The report's timeline draws one lane per worker process (Tune reuses a worker for the
            # next trial), labelled with its GPU: numbers, so that MLflow keeps them as metrics.
            "worker_pid": os.getpid(),
        }
        gpus = ray.get_gpu_ids()
        if gpus and str(gpus[0]).isdigit():
            metrics["gpu_index"] = int(gpus[0])
        util = self.usage.mean() if self.usage is not None else None
        if util is not None:  # the mean since the last report (sweep/gpu_usage.py)
            metrics["gpu_util"] = util
        metrics["gpu_seconds"] = (
            metrics["elapsed_s"] * self.share
        )  # cost: GPU-seconds (CPU-seconds without GPUs)
        weights = self.sweep.search.weights
        if weights and all(isinstance(metrics.get(k), (int, float)) for k in weights):
            metrics["objective"] = sum(w * metrics[k] for k, w in weights.items())
        try:
            tune.report(
                metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
            )
        finally:
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)


def run_trial(cfg: TrialConfig, reporter) -> dict:
    """The trainable, imported on a trial's first call rather than when Ray loads this module: what
    its libraries print on import (bitsandbytes' kernel warning) then lands in the trial's log."""
    from trainables.trial import run_trial as run

    return run(cfg, reporter)


def _halved(cfg: TrialConfig, failed: int) -> TrialConfig:
    """The step's rows regrouped into micro-batches of at most half the one that ran out of memory
    (`failed`: the run plan's, which may be larger than the configured one) that divide the step."""
    rows = cfg.training.batch_size * cfg.training.grad_accum
    size = next(b for b in range(failed // 2, 0, -1) if rows % b == 0)
    return cfg.model_copy(
        update={"training": cfg.training.model_copy(update={"batch_size": size, "grad_accum": rows // size})}
    )


def _micro_batch(err: BaseException, cfg: TrialConfig) -> int:
    """The micro-batch that ran out of memory: the trial's run plan names it on the error."""
    return getattr(err, "micro_batch", cfg.training.batch_size)


def run_with_retries(cfg: TrialConfig, reporter) -> dict:
    """Out of memory: retry once with half the micro-batch that ran out and more accumulation (the same
    rows a step), then fail this trial alone with the reason. A full disk fails the trial with a clear
    reason."""
    try:
        try:
            return run_trial(cfg, reporter)
        except torch.OutOfMemoryError as err:
            failed = _micro_batch(err, cfg)
            if failed < 2:
                raise RuntimeError(
                    f"out of memory at a micro-batch of 1 row: {str(err).splitlines()[0]}"
                ) from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            smaller = _halved(cfg, failed)
            log.warning(
                "out of memory at a micro-batch of %d rows (%s); retrying with batch_size=%d grad_accum=%d",
                failed,
                str(err).splitlines()[0],
                smaller.training.batch_size,
                smaller.training.grad_accum,
            )
            try:
                return run_trial(smaller, reporter)
            except torch.OutOfMemoryError as again:
                raise RuntimeError(
                    f"out of memory at a micro-batch of {failed} rows and again at "
                    f"{_micro_batch(again, smaller)}: {str(again).splitlines()[0]}"
                ) from None
    except Exception as err:
        if _disk_full(err):
            where = getattr(err, "filename", None) or "checkpoint"
            raise RuntimeError(
                f"disk full while writing trial files ({where}): free space or point storage_path "
                "at a larger volume"
            ) from None
        raise


def _disk_full(err: BaseException) -> bool:
    """ENOSPC as an OSError, or as the text of a library's own error (safetensors raises a
    SafetensorError saying 'No space left on device (os error 28)')."""
    return getattr(err, "errno", None) == errno.ENOSPC or os.strerror(errno.ENOSPC) in str(err)


# Tune reuses a worker for the next trial only if the last trial's thread ends within this many seconds
# (default 2), else the next trial fails; handing back a large base (unload, compiled graphs freed) can
# take longer. Read by Tune in this process when it resets the worker.
THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"


def run_tune_trial(params: dict, base: dict, sweep: dict, verbose: bool = False) -> None:
    """Ray Tune's function trainable: one sampled point -> one trial, its output in its own log
    unless `verbose` (then on the driver's console, through Ray)."""
    os.environ.setdefault(THREAD_TIMEOUT_ENV, "120")
    with contextlib.nullcontext() if verbose else trial_log(trial_dir() / LOG_NAME):
        _run(trial_config(base, params), SweepConfig.model_validate(sweep))


def _run(cfg: TrialConfig, sweep_cfg: SweepConfig) -> None:
    assigned = ray.get_runtime_context().get_assigned_resources()
    share = assigned.get("GPU") or assigned.get("CPU", 1.0)  # the cost unit: GPU-s, or CPU-s without GPUs
    if assigned.get("GPU"):  # lets the trainable size itself, capped to its share of "a GPU"
        grant_gpu_share(assigned["GPU"], sweep_cfg.resources.gpu_memory_gb)
    if sweep_cfg.resources.workers_per_trial > 1:
        from sweep.train_workers import run_multi_worker_trial

        run_multi_worker_trial(cfg, sweep_cfg)
        return
    with GpuSampler(ray.get_gpu_ids()).running() as usage:
        run_with_retries(cfg, TuneReporter(sweep_cfg, share, usage))
