"""Sample generations for the report, once per sweep: the best trial's adapter beside the base model.

Every trial used to generate its samples at its end (7-14 s each on an H100, eager; 37.5% of all trial
seconds in the GPU main job, issue 30) for text no one read unless a judge scored it. A sweep without
a judge now generates once, after it ends, for the trial the report shows: its adapter and the base
model, the same fixed prompts, in one Ray task on whatever device the trials used.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import ray

from sweep.config import SweepConfig
from sweep.placement import gpu_share
from sweep.tracking import client_for, log_base_generations, log_generations

log = logging.getLogger(__name__)
SAMPLE_TIMEOUT_S = 900  # loading a base and generating 2 x num_prompts: minutes at most, even on a CPU


def _generate(trial: dict, adapter: str, submitted: float) -> tuple[list[dict], list[dict], dict]:
    """Runs in a Ray worker (a GPU's when the cluster has one); also says where its seconds went:
    waiting for a worker and its imports, loading the base and adapter, generating."""
    seconds = {"start": time.time() - submitted}
    started = time.perf_counter()
    from trainables.config import TrialConfig
    from trainables.evaluate import sample_generations

    seconds["import"] = time.perf_counter() - started
    records, base = sample_generations(TrialConfig.model_validate(trial), adapter, seconds)
    return records, base, seconds


def sample_best(
    cfg: SweepConfig, best: dict, tracking_uri: str, parent_run_id: str, seconds: dict | None = None
) -> bool:
    """Generate and log the best trial's and the base's samples (MLflow: the best run's and the sweep
    run's `eval/*generations.json`, beside its checkpoint's `eval/`). False when there is nothing to do:
    a judged sweep (its trials generated), no local checkpoint (s3:// / gs:// storage: not sampled yet,
    the report then says the best trial logged no generations), or the task failed or timed out
    (logged, not fatal: the sweep's results stand without samples). `seconds` gets the task's phases."""
    ckpt = best.get("checkpoint")
    if cfg.judge.backend != "none" or not ckpt or "://" in ckpt or not (Path(ckpt) / "adapter").is_dir():
        return False
    if (Path(ckpt) / "eval" / "generations.json").is_file():
        return False  # already sampled (a resumed sweep, or a `report` after the run)
    # The share of a GPU a trial had (one trial's memory): asking for a whole GPU could wait forever on a
    # cluster whose GPUs are shared; the wait is bounded all the same.
    share = gpu_share(cfg) if cfg.resources.workers_per_trial == 1 else 1.0
    task = ray.remote(num_gpus=share, num_cpus=1, max_retries=0)(_generate)
    ref = task.remote(best["config"], str(Path(ckpt) / "adapter"), time.time())
    try:
        records, base, took = ray.get(ref, timeout=SAMPLE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - samples are for the report; the sweep's results stand
        ray.cancel(ref, force=True)
        log.warning(
            "sample generations for the best trial failed: %s",
            (str(err) or type(err).__name__).splitlines()[0],
        )
        return False
    if seconds is not None:
        seconds.update({k: round(v, 3) for k, v in took.items()})
    out = Path(ckpt) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "generations.json").write_text(json.dumps(records, indent=1))
    (out / "base_generations.json").write_text(json.dumps(base, indent=1))
    if best.get("run_id"):
        log_generations(client_for(tracking_uri), best["run_id"], records)
    log_base_generations(tracking_uri, parent_run_id, base)
    return True
