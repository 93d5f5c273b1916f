"""The sweep config: the trial config's sections as the base, plus search, resources and storage.

Everything is checked here, before Ray starts: every searched path must exist in the trial config
and every value a domain can produce (each choice, both ends of a range) must be a valid trial
value, so a bad space fails in milliseconds with the field path, not hours later inside a worker.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evaluation.config import Strict
from evaluation.errors import ConfigError
from trainables.config import TrialConfig, apply_overrides, apply_params, read_yaml, validate

DOMAINS = ("choice", "uniform", "loguniform", "randint", "lograndint")


class SchedulerConfig(Strict):
    type: Literal["asha", "none"] = Field(
        "asha", description="ASHA stops weak trials at eval rungs; 'none' runs all to the end."
    )
    grace_period: int = Field(
        1,
        ge=1,
        description="Reports (eval intervals) every trial gets before it can be stopped (1 beat 2 and 3 in the replay).",
    )
    reduction_factor: float = Field(
        2,
        gt=1,
        description="ASHA keeps 1/reduction_factor of the trials at each rung (2, 3 and 4 tied in the replay).",
    )


class SearchConfig(Strict):
    space: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict,
        description="Dotted trial path -> {choice: [...]} | {uniform: [lo, hi]} | {loguniform: [lo, hi]} | {randint: [lo, hi]}.",
    )
    metric: str = Field(
        "eval_loss", description="Reported metric to optimise, or 'objective' with `weights`."
    )
    mode: Literal["min", "max"] = Field("min")
    weights: dict[str, float] | None = Field(
        None, description="objective = sum(weight * metric): e.g. {eval_loss: 1.0, judge_score: -0.1}."
    )
    metric2: str | None = Field(
        None, description="Optional second objective (e.g. gpu_seconds): a Pareto front."
    )
    mode2: Literal["min", "max"] = Field("min")
    num_samples: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Trials to run. Default (null): by the trials at once, 16 up to 2, then max(24, 2 x at once): "
        "the fewest that ended within 1% of the best in 99% of replays (sweep/width.py).",
    )
    max_concurrent_trials: int = Field(
        2, ge=1, description="Trials running at once (also bounded by resources)."
    )
    initial_points: list[dict[str, Any]] = Field(
        default_factory=list, description="Configurations evaluated first (dotted path -> value)."
    )
    seed: int = Field(0, description="Seeds Optuna's TPE sampler.")
    n_startup_trials: int | None = Field(
        None,
        ge=0,
        description="Completed trials (initial points and answered repeats included) before TPE models "
        "the results; until then it samples at random. Default (null): max(2, number of initial_points); "
        "on the recorded SmolLM2 grid 1, 2, 4 and 6 did equally well and 10 worse "
        "(benchmarks/RESULTS.md, issue 23). TPE only (not metric2).",
    )
    constant_liar: bool | None = Field(
        None,
        description="TPE treats running trials as bad results, so trials started at once differ. "
        "Default (null): on at every width (Optuna's own default is off; off did no better at 2, 8 or 32 at "
        "once in the replay, benchmarks/RESULTS.md issue 28). TPE only.",
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)

    @field_validator("space")
    @classmethod
    def _domains(cls, space: dict) -> dict:
        for path, dom in space.items():
            if len(dom) != 1 or next(iter(dom)) not in DOMAINS:
                raise ValueError(
                    f"{path}: one of {', '.join(DOMAINS)} with its values, e.g. {{choice: [4, 8]}}"
                )
            kind, values = next(iter(dom.items()))
            if not isinstance(values, list) or not values:
                raise ValueError(f"{path}.{kind}: a non-empty list")
            if kind != "choice":
                if len(values) != 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
                ):
                    raise ValueError(f"{path}.{kind}: [low, high] numbers")
                if not all(math.isfinite(v) for v in values):  # Tune/Optuna cannot sample [1, .inf]
                    raise ValueError(f"{path}.{kind}: finite numbers (got {values})")
                if values[0] >= values[1]:
                    raise ValueError(f"{path}.{kind}: low < high (got {values})")
                if kind.startswith("log") and values[0] <= 0:
                    raise ValueError(f"{path}.{kind}: low > 0 for a log scale")
        return space


class ResourcesConfig(Strict):
    cpu: float = Field(1, gt=0, description="CPUs per trial (per worker with workers_per_trial > 1).")
    gpu: float | Literal["auto"] = Field(
        "auto",
        description="GPUs per trial; fractions pack trials on one GPU; auto = from the memory estimate (0 without GPUs).",
    )
    gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory of one GPU for auto fractions and `plan`, and a cap: each trial process is held to "
        "its share of it (to share a GPU with other work, or to emulate a smaller GPU); default: detected, else 80.",
    )
    workers_per_trial: int = Field(1, ge=1, description="Ray Train workers per trial (data parallel).")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="Multi-worker trials: ddp = a whole model per worker; fsdp = base and adapter sharded "
        "across the workers (for models bigger than one GPU; 4 or 16 bits, not 8).",
    )
    keep_effective_batch: bool = Field(
        True,
        description="With N workers, each takes batch_size / N rows so the effective batch stays as configured.",
    )

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v):
        if v != "auto" and (v < 0 or (v > 1 and v != int(v))):
            raise ValueError("'auto', a fraction in [0, 1] or a whole number of GPUs")
        return v


class TrackingConfig(Strict):
    tracking_uri: str | None = Field(
        None, description="MLflow URI; default: $MLFLOW_TRACKING_URI, else sqlite under storage_path."
    )
    register_best: bool = Field(True, description="Register the best adapter in the MLflow model registry.")
    model_name: str | None = Field(None, description="Registered model name; default: the sweep name.")
    merge: bool = Field(False, description="Also register a merged 16-bit model (base + adapter).")


class SweepConfig(TrialConfig):
    name: str = Field(
        "qlora-sweep", pattern=r"^[A-Za-z0-9_.-]+$", description="Experiment name (letters, digits, _ . -)."
    )
    storage_path: str = Field(
        "~/qlora-sweep-results", description="Local dir, NFS path or cloud URI (s3://, gs://)."
    )
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial, from its last checkpoint.")
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _objective(self) -> SweepConfig:
        if self.search.metric == "objective" and not self.search.weights:
            raise ValueError("search.weights is required when search.metric is 'objective'")
        return self

    def trial_dict(self) -> dict:
        """The base trial config (the sweep-only sections stripped)."""
        return self.model_dump(include=set(TrialConfig.model_fields))

    def storage(self) -> str:
        return (
            self.storage_path
            if "://" in self.storage_path
            else str(Path(self.storage_path).expanduser().resolve())
        )

    def tracking_uri(self) -> str:
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        if "://" in self.storage_path:
            raise ConfigError(
                "tracking.tracking_uri", None, "an MLflow server URI when storage_path is remote"
            )
        return f"sqlite:///{Path(self.storage()) / 'mlflow.db'}"


def check_space(cfg: SweepConfig) -> None:
    """Every searched path and value must make a valid trial config (errors name search.space.<path>)."""
    base = cfg.trial_dict()
    for path, dom in cfg.search.space.items():
        kind, values = next(iter(dom.items()))
        for value in values:
            _check_value(base, path, value, f"search.space.{path}.{kind}")
    for n, point in enumerate(cfg.search.initial_points):
        for path, value in point.items():
            if path not in cfg.search.space:
                raise ConfigError(
                    f"search.initial_points[{n}].{path}",
                    value,
                    f"paths in search.space: {', '.join(cfg.search.space)}",
                )
            _check_in_domain(cfg.search.space[path], value, f"search.initial_points[{n}].{path}")
            _check_value(base, path, value, f"search.initial_points[{n}].{path}")


def _check_in_domain(dom: dict[str, list[Any]], value: Any, field: str) -> None:
    """An initial point outside its domain would crash Optuna when the sweep suggests it."""
    kind, values = next(iter(dom.items()))
    if kind == "choice":
        if value not in values:
            raise ConfigError(field, value, f"one of search.space's choices {values}")
    else:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not values[0] <= value <= values[1]:
            raise ConfigError(field, value, f"a number in [{values[0]}, {values[1]}] ({kind})")


def _check_value(base: dict, path: str, value: Any, field: str) -> None:
    try:
        validate(TrialConfig, apply_params(base, {path: value}))
    except ConfigError as err:
        if err.field != path:
            raise ConfigError(field, value, f"a valid trial path; {err}") from None
        raise ConfigError(field, value, err.allowed, err.hint) from None


def load_sweep_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override and validate a sweep YAML; fails before any expensive work starts."""
    data = read_yaml(path) if path else {}
    cfg = validate(SweepConfig, apply_overrides(data, overrides or []))
    check_space(cfg)
    if cfg.resources.strategy == "fsdp" and cfg.resources.workers_per_trial > 1:
        from trainables.sharding import check_shardable  # imports torch: not on every CLI start

        check_shardable(cfg.quantization.bits)
    return cfg
