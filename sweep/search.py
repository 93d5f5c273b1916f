"""How the sweep searches: the one place that builds its searcher and scheduler from the YAML.

`sweep/runner.py` hands these objects to Ray Tune; `sweep/replay.py` drives the very same objects
against recorded learning curves, so what the replay measures is what a sweep runs.
"""

from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from sweep.config import SweepConfig
from sweep.dedup import DedupSearcher

RUNG_METRICS = {
    "eval_loss",
    "perplexity",
    "train_loss",
    "tokens_per_s",
    "peak_mem_gb",
    "gpu_seconds",
    "elapsed_s",
}


def n_startup_trials(cfg: SweepConfig) -> int:
    s = cfg.search
    return s.n_startup_trials if s.n_startup_trials is not None else max(2, len(s.initial_points))


def searcher(cfg: SweepConfig, sampler: optuna.samplers.BaseSampler | None = None) -> DedupSearcher:
    """Seeded TPE (NSGA-II with two objectives) behind the never-twice wrapper; `sampler` replaces
    the sampler (the replay's random-search baseline)."""
    s = cfg.search
    points = s.initial_points or None
    if s.metric2:
        inner = OptunaSearch(
            metric=[s.metric, s.metric2],
            mode=[s.mode, s.mode2],
            points_to_evaluate=points,
            sampler=sampler or optuna.samplers.NSGAIISampler(seed=s.seed),
        )
    else:
        inner = OptunaSearch(
            metric=s.metric,
            mode=s.mode,
            points_to_evaluate=points,
            sampler=sampler
            or optuna.samplers.TPESampler(
                seed=s.seed,
                n_startup_trials=n_startup_trials(cfg),
                constant_liar=s.constant_liar is not False,  # null: on (sweep/width.py)
            ),
        )
    return DedupSearcher(inner, seed=s.seed)


def rung_metric(sweep: SweepConfig) -> str:
    """ASHA compares trials at every report: a metric only known at the end (judge) cannot rank rungs."""
    s = sweep.search
    if s.metric in RUNG_METRICS or (s.weights and set(s.weights) <= RUNG_METRICS):
        return s.metric
    return "eval_loss"


def scheduler(cfg: SweepConfig, reports_per_trial: int) -> ASHAScheduler | None:
    sch = cfg.search.scheduler
    if sch.type == "none":
        return None
    metric = rung_metric(cfg)
    return ASHAScheduler(
        metric=metric,
        mode=cfg.search.mode if metric == cfg.search.metric else "min",
        time_attr="training_iteration",
        max_t=max(reports_per_trial, sch.grace_period),
        grace_period=sch.grace_period,
        reduction_factor=sch.reduction_factor,
    )


def reports_per_trial(cfg: SweepConfig) -> int:
    """ASHA's rungs are our eval intervals: one Tune iteration per report."""
    t = cfg.training
    if t.max_steps:
        return -(-t.max_steps // t.eval_interval)
    return 10**6  # epoch-bounded trials: no fixed horizon, ASHA uses its rungs only


def searcher_of(tuner) -> DedupSearcher | None:
    """The DedupSearcher a Tuner ran (a restored Tuner unpickles its own, with the restored state).
    Ray has no public accessor; tests/sweep/test_dedup.py fails if this stops finding it."""
    tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    alg = getattr(tune_config, "search_alg", None)
    return alg if isinstance(alg, DedupSearcher) else None
