"""Run a sweep with Ray Tune: OptunaSearch (seeded TPE) suggests, ASHA stops, Ray places trials.

This is the only module that adapts our config to Ray Tune's classes; everything Ray-specific
that a trial needs (the reporter) is in `sweep/tune_reporter.py`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from evaluation.errors import ConfigError
from sweep import ray_start, stored
from sweep.config import SweepConfig
from sweep.console import failure_reason, use_console
from sweep.placement import concurrent_trials, trial_resources
from sweep.preflight import check_cluster
from sweep.ray_start import connect_ray
from sweep.resume import StateBackup, repair_state, write_state_often
from sweep.reuse import experiment_dir
from sweep.samples import SamplePrewarm, sample_best, samples_here, samples_wanted, stop_sampler
from sweep.search import reports_per_trial, searcher_of
from sweep.search import scheduler as _scheduler
from sweep.search import searcher as _searcher
from sweep.space import trial_config, tune_space
from sweep.tracking import (
    MlflowTrialCallback,
    client_for,
    finish_sweep_run,
    log_base_generations,
    log_calibration,
    log_metrics,
    start_sweep_run,
    trial_run_id,
)
from sweep.trial_lines import tune_callbacks
from sweep.tune_reporter import run_tune_trial
from sweep.width import for_cluster

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    experiment_path: str
    best: dict | None  # {"trial_id", "config", "metrics", "checkpoint"}
    finished: int
    failed: int
    stopped_early: int
    errors: dict[str, str]
    parent_run_id: str | None
    report: tuple | None = None
    search: dict | None = None  # DedupSearcher.stats(): proposals answered, configs tried, why it stopped
    driver: dict | None = None  # the driver's seconds by phase: ray_start, setup, trials, samples


def _tuner(cfg: SweepConfig, parent_run_id: str, restore: bool, resources, stop=None, verbose: bool = False):
    trainable = tune.with_parameters(
        run_tune_trial, base=cfg.trial_dict(), sweep=cfg.model_dump(), verbose=verbose
    )
    trainable = tune.with_resources(trainable, resources)
    path = (
        str(Path(cfg.storage()) / cfg.name) if "://" not in cfg.storage() else f"{cfg.storage()}/{cfg.name}"
    )
    callbacks = [*tune_callbacks(cfg), MlflowTrialCallback(cfg.tracking_uri(), cfg.name, parent_run_id)]
    if "://" not in path:
        callbacks.append(StateBackup(path))
    if samples_wanted(cfg) and not samples_here(cfg):
        callbacks.append(SamplePrewarm(cfg))
    if restore:
        if "://" not in path and repair_state(Path(path)) == "unrecoverable":
            raise ConfigError("EXPERIMENT", path, "an experiment directory with a readable Tune state")
        return tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            restart_errored=False,
            param_space=tune_space(cfg.search.space),
        )
    run_config = tune.RunConfig(
        name=cfg.name,
        storage_path=cfg.storage(),
        callbacks=callbacks,
        stop=stop,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.training.keep_checkpoints),
        verbose=0,  # Tune's own reporter prints errors only; TrialLines (in callbacks) prints the rest
    )
    tune_config = tune.TuneConfig(
        search_alg=_searcher(cfg),
        scheduler=_scheduler(cfg, reports_per_trial(cfg)),
        num_samples=cfg.search.num_samples,
        max_concurrent_trials=concurrent_trials(cfg, resources),
        # A finished trial's worker process runs the next trial: imports, CUDA context and the loaded
        # base model (trainables/base_cache.py) are kept, which is most of a trial's fixed cost. Not for
        # Ray Train trials: their controller thread outlives Tune's reset timeout, failing the next trial.
        reuse_actors=cfg.resources.workers_per_trial == 1,
    )
    return tune.Tuner(
        trainable, param_space=tune_space(cfg.search.space), tune_config=tune_config, run_config=run_config
    )


def run_sweep(
    cfg: SweepConfig, restore: bool = False, calibration: dict | None = None, stop=None, verbose: bool = False
) -> SweepOutcome:
    """Run (or resume) the sweep to the end; failed trials are recorded, never fatal to the others.

    `stop` is Ray Tune's own stopping criterion (a dict of metric limits or a `tune.Stopper`) for
    Python callers that end trials on a condition of their own; trials it stops count as stopped early.
    `verbose` leaves trials' and libraries' output on the console (see `sweep/console.py`).
    The driver's own seconds (the CLI's start, Ray's start, setup, the trials, the samples, closing)
    are in the outcome and the sweep run's `driver_<phase>_s` metrics: on a GPU, 75 of a 205 s sweep
    lay outside the trials (issue 30), and these say where.
    """
    driver, lap = {}, [time.perf_counter()]

    def done(phase: str) -> None:
        now = time.perf_counter()
        driver[phase], lap[0] = round(now - lap[0], 3), now

    connect_ray(log_to_driver=verbose)  # already up when the CLI started it beside its imports
    if ray_start.startup is not None:  # the CLI's seconds before Ray's start: Python, config, checks
        driver["startup"], ray_start.startup = round(ray_start.startup, 3), None  # once: not a later run's
    done("ray_start")
    driver["ray_start"] = max(driver["ray_start"], round(ray_start.seconds, 3))
    check_cluster(cfg)  # multi-node: shared storage and an MLflow server, before anything starts
    from trainables.gpu_peers import compile_turns

    compile_turns()  # a bad $QLORA_SWEEP_COMPILE_TURNS is refused here, not in every trial
    written = cfg.model_dump()  # what the experiment's record hashes (sweep/reuse.py)
    resources = trial_resources(cfg)  # once: it plans every combination (sweep/plan.py)
    cfg = for_cluster(cfg, resources)  # search settings left null: those of its width (sweep/width.py)
    write_state_often()
    uri = cfg.tracking_uri()
    parent = start_sweep_run(  # a new sweep gets a new parent run, even under a reused name (--overwrite)
        uri,
        cfg.name,
        cfg.model_dump(),
        cfg.search.space,
        storage_path=cfg.storage(),
        new=not restore,
        written=written,
    )
    if calibration:
        log_calibration(uri, parent, calibration)
    tuner = _tuner(cfg, parent, restore, resources, stop, verbose)
    done("setup")
    with use_console(verbose):
        results = tuner.fit()
    done("trials")
    search = searcher_of(tuner)
    if search:
        log_metrics(client_for(uri), parent, {"proposals_answered": search.answered}, step=0)
    errors = {Path(r.path).name: failure_reason(r.error) for r in results if r.error}
    finished = [r for r in results if not r.error and r.metrics]
    complete = [r for r in finished if r.metrics.get("step") == r.metrics.get("total_steps")]
    best = _best(cfg, complete or finished)  # a trial ASHA stopped early is best only if none completed
    took: dict = {}  # the sampler's own phases
    if best:
        best["run_id"] = trial_run_id(uri, parent, best["trial_id"])
        log_path = None if verbose else _driver_log(cfg)
        if not sample_best(cfg, best, uri, parent, took, log_path):
            _log_base_generations(uri, parent, best["checkpoint"])
    else:
        stop_sampler(cfg)
    done("samples")
    driver.update({f"samples_{k}": v for k, v in took.items()})
    log_metrics(client_for(uri), parent, {f"driver_{k}_s": v for k, v in driver.items()}, step=0)
    finish_sweep_run(uri, parent)
    return SweepOutcome(
        stored.uri_of(cfg.storage(), results.experiment_path),
        best,
        len(finished),
        len(errors),
        len(finished) - len(complete),
        errors,
        parent,
        search=search.stats() if search else None,
        driver=driver,
    )


def _driver_log(cfg: SweepConfig) -> Path:
    """Where the driver's own model work (the samples) writes its libraries' output: beside the trials'
    logs, or where the report goes when the experiment is in cloud storage (sweep/session.py)."""
    return (experiment_dir(cfg) or Path.cwd() / cfg.name) / "samples.log"


def _best(cfg: SweepConfig, finished) -> dict | None:
    metric, sign = cfg.search.metric, (1 if cfg.search.mode == "min" else -1)
    scored = [r for r in finished if isinstance(r.metrics.get(metric), (int, float))]
    if not scored:
        return None
    r = min(scored, key=lambda r: sign * r.metrics[metric])
    params = {k: v for k, v in r.config.items()}
    return {
        "trial_id": r.metrics.get("trial_id"),
        "params": params,
        "metrics": r.metrics,
        "config": trial_config(cfg.trial_dict(), params).model_dump(),
        "checkpoint": stored.uri_of(cfg.storage(), r.checkpoint.path) if r.checkpoint else None,
    }


def _log_base_generations(uri: str, parent: str, checkpoint: str | None) -> None:
    """The base model's outputs (written by every trial, identical) go to the parent run once."""
    base = stored.read_json(checkpoint, "eval/base_generations.json") if checkpoint else None
    if base is not None:
        log_base_generations(uri, parent, base)


def experiment_config(path: str) -> SweepConfig:
    """The sweep config saved with an experiment (for `resume` and `report`)."""
    from sweep.config import load_sweep_config

    saved = Path(path) / "sweep_config.yaml"
    if not saved.is_file():
        raise ConfigError("EXPERIMENT", path, "an experiment directory written by `qlora-sweep run`")
    return load_sweep_config(saved)
