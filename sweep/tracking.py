"""MLflow tracking for a sweep: one parent run per sweep, one nested child run per Ray Tune trial.

This module holds the Tune callback and is the one import point of the tracking API; the parent
run lives in `sweep/tracking_runs.py`, what may be logged (and secret masking) in
`sweep/tracking_params.py`.

Why not Ray's own `ray.air.integrations.mlflow.MLflowLoggerCallback` (subclassed or as is): it
keys runs by the in-memory `Trial` object (`self._trial_runs[trial]`) and creates a fresh run in
`log_trial_start` whenever that dict lacks the trial, so a resumed sweep (`Tuner.restore`, a
re-created driver or callback) opens a duplicate run for every trial; its `setup_mlflow` sets the
process-global tracking URI and experiment through the fluent API; runs are not nested under a
sweep run; `log_trial_end` only learns `failed: bool`, not the error; params are flattened with
"/" rather than our dotted paths and metrics are stepped by `training_iteration`, not the
optimizer step. Subclassing would override every method it has, so `MlflowTrialCallback` is a
plain `ray.tune.Callback` that finds each trial's run by the tag `qlora_sweep.trial_id` under the
parent, which makes resume and retry continue the same run.

Everything goes through `MlflowClient` (no fluent global state: the callback runs inside the
Ray driver next to other code).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import RunTag
from ray import cloudpickle
from ray.tune import Callback

from sweep.tracking_params import (
    DATA_STATS_PARAMS,
    MAX_TAG_LEN,
    base_model_tags,
    code_version,
    data_stats_params,
    first_line,
    numeric_metrics,
    safe_params,
    sanitize,
)
from sweep.tracking_runs import (  # noqa: F401 - `sweep.tracking` is the one import point
    FAILURE_TAG,
    OUTCOME_TAG,
    PARENT_TAG,
    ROLE_TAG,
    TRIAL_ID_TAG,
    child_runs,
    client_for,
    find_trial_run,
    finish_sweep_run,
    log_base_generations,
    log_calibration,
    log_generations,
    log_metrics,
    log_params,
    start_sweep_run,
    trial_run_id,
)

logger = logging.getLogger(__name__)


def _trial_sections() -> set[str]:
    """Top-level keys of the trial config (the sweep config adds name, search, resources, ...)."""
    from trainables.config import TrialConfig

    return set(TrialConfig.model_fields)


# ---------------------------------------------------------------- the per-trial callback


def _failure_reason(trial: Any) -> str:
    """'ValueError: message' of the trial's error (the exception itself, not Ray's wrapper).

    Tune writes the error next to the trial on the driver (`pickled_error_file`, `error_file`)
    before calling `on_trial_error`; the copies in storage are synced later, so read local first.
    """
    err = None
    try:
        local = trial.pickled_error_file
        if local and os.path.isfile(local):
            with open(local, "rb") as f:
                err = cloudpickle.load(f)
        else:
            err = trial.get_pickled_error()
    except Exception:  # an unpicklable error: fall back to the text trace
        err = None
    while err is not None and getattr(err, "cause", None) is not None:
        err = err.cause  # RayTaskError wraps the user's exception
    if err is not None:
        return first_line(f"{type(err).__name__}: {err}")
    local = trial.error_file
    text = (
        Path(local).read_text(errors="replace")
        if local and os.path.isfile(local)
        else trial.get_error() or ""
    )
    raised = [ln for ln in str(text).splitlines() if re.match(r"^[\w.]+(Error|Exception)\b", ln)]
    return first_line(raised[-1] if raised else text)


class MlflowTrialCallback(Callback):
    """Logs each trial as a child run of `parent_run_id`; resumed or retried trials keep their run.

    The experiment is the parent run's (`experiment_name` is kept for messages). Params are the
    sweep's base trial config (from the parent's params) overridden by the trial's sampled paths.
    `strict=False` (the default) turns tracking failures into warnings so an MLflow outage does
    not kill hours of training; tests pass `strict=True` so that bugs surface.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, parent_run_id: str, *, strict: bool = False):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.parent_run_id = parent_run_id
        self.strict = strict
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._experiment_id: str | None = None
        self._base: dict[str, str] | None = None
        self._data_logged: set[str] = set()  # runs whose data accounting is logged (params are write-once)

    def __getstate__(self) -> dict:
        # Tune pickles callbacks into its experiment state; the client and cache are rebuilt.
        state = self.__dict__.copy()
        state.update(_client=None, _runs={}, _experiment_id=None, _base=None, _data_logged=set())
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    def _guard(self, what: str, fn, *args) -> Any:
        try:
            return fn(*args)
        except Exception:
            if self.strict:
                raise
            logger.exception("MLflow tracking failed while %s (the sweep goes on)", what)
            return None

    # -- run lookup

    def run_id_for(self, trial: Any, *, reopen: bool = False) -> str:
        """The trial's run: cached, else found by tag under the parent, else created with params."""
        tid = str(trial.trial_id)
        if tid in self._runs and not reopen:
            return self._runs[tid]
        if self._experiment_id is None:
            self._experiment_id = self.client.get_run(self.parent_run_id).info.experiment_id
        run = find_trial_run(self.client, self._experiment_id, self.parent_run_id, tid)
        if run is not None:
            if reopen and run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
                if FAILURE_TAG in run.data.tags:
                    self.client.delete_tag(run.info.run_id, FAILURE_TAG)
                restarts = int(run.data.tags.get("qlora_sweep.restarts", "0")) + 1
                self.client.set_tag(run.info.run_id, "qlora_sweep.restarts", str(restarts))
            run_id = run.info.run_id
        else:
            run_id = self._create_run(trial, self._experiment_id)
        self._runs[tid] = run_id
        return run_id

    def _base_params(self) -> dict[str, str]:
        """The sweep's base trial config, from the parent's params: the runner's `trial.config` holds
        only the sampled dotted paths (the base travels via `tune.with_parameters`)."""
        if self._base is None:
            params = self.client.get_run(self.parent_run_id).data.params
            sections = _trial_sections()
            self._base = {k: v for k, v in params.items() if k.split(".")[0] in sections}
        return self._base

    def _create_run(self, trial: Any, exp_id: str) -> str:
        params = {**self._base_params(), **safe_params(trial.config or {})}
        tags = {
            PARENT_TAG: self.parent_run_id,
            TRIAL_ID_TAG: str(trial.trial_id),
            "code_version": code_version(),
        }
        for tag, key in (
            ("base_model", "model.path"),
            ("base_revision", "model.revision"),
            ("dataset", "data.source"),
        ):
            if params.get(key) not in (None, "", "null"):
                tags[tag] = params[key][:MAX_TAG_LEN]
        run_id = self.client.create_run(exp_id, run_name=str(trial), tags=tags).info.run_id
        log_params(self.client, run_id, params, existing={})
        return run_id

    # -- Tune hooks

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self.client.get_run(self.parent_run_id)  # fail fast on a wrong parent id or store

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._guard("starting a trial run", lambda: self.run_id_for(trial, reopen=True))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info) -> None:
        def tag() -> None:
            run_id = self.run_id_for(trial)
            self.client.set_tag(run_id, "qlora_sweep.last_retry_reason", _failure_reason(trial))

        self._guard("recording a retry", tag)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info) -> None:
        def log() -> None:
            step = int(result.get("step", result.get("training_iteration", 0)) or 0)
            data = result.get("data_stats") if isinstance(result.get("data_stats"), dict) else {}
            tags = {"dataset_hash": data["dataset_hash"]} if isinstance(data.get("dataset_hash"), str) else {}
            run_id = self.run_id_for(trial)
            log_metrics(self.client, run_id, numeric_metrics(result), step, tags)
            if data and run_id not in self._data_logged:  # rows read, dropped (blank, duplicate), overlong
                log_params(self.client, run_id, data_stats_params(data))
                self._data_logged.add(run_id)

        self._guard("logging metrics", log)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        def finish() -> None:
            run_id = self.run_id_for(trial)
            checkpoint = trial.checkpoint
            tags = {OUTCOME_TAG: "no_checkpoint"}
            train_ckpt = (trial.last_result or {}).get("checkpoint_path")  # Ray Train trials (rank 0's)
            if checkpoint is not None:
                with checkpoint.as_directory() as d:
                    tags = self._log_checkpoint(run_id, Path(d), trial)
            elif isinstance(train_ckpt, str) and Path(train_ckpt).is_dir():
                tags = self._log_checkpoint(run_id, Path(train_ckpt), trial)
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(run_id, status="FINISHED")

        self._guard("finishing a trial run", finish)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        def fail() -> None:
            run_id = self.run_id_for(trial)
            tags = {FAILURE_TAG: _failure_reason(trial), OUTCOME_TAG: "failed"}
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(run_id, status="FAILED")

        self._guard("recording a failed trial", fail)

    def on_experiment_end(self, trials: list, **info) -> None:
        def end() -> None:
            for trial in trials:
                if trial.status not in ("TERMINATED", "ERROR") and str(trial.trial_id) in self._runs:
                    run_id = self._runs[str(trial.trial_id)]
                    self.client.set_tag(
                        run_id, FAILURE_TAG, f"killed: the sweep ended while the trial was {trial.status}"
                    )
                    self.client.set_terminated(run_id, status="KILLED")
            finish_sweep_run(self.tracking_uri, self.parent_run_id)

        self._guard("ending the sweep", end)

    # -- artifacts

    def _log_checkpoint(self, run_id: str, ckpt: Path, trial: Any) -> dict[str, str]:
        """Log adapter + tokenizer (one loadable `adapter/` dir), generations, summary, config.

        Returns the tags to set: the outcome, where the base model came from and, when the summary
        has it, the dataset hash.
        """
        tags = base_model_tags(ckpt)
        for sub in ("adapter", "tokenizer"):
            if (ckpt / sub).is_dir():
                self.client.log_artifacts(run_id, str(ckpt / sub), "adapter")
        generations = ckpt / "eval" / "generations.json"
        if generations.is_file():
            log_generations(self.client, run_id, json.loads(generations.read_text(encoding="utf-8")))
        summary_file = ckpt / "eval" / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            _log_clean(self.client, run_id, summary_file, summary, "eval/summary.json")
            if isinstance(summary.get("dataset_hash"), str):
                tags["dataset_hash"] = summary["dataset_hash"]
            last = trial.last_result or {}
            extra = {
                k: v
                for k, v in numeric_metrics(summary).items()
                if k not in last and k not in DATA_STATS_PARAMS and math.isfinite(v)  # counts: params
            }
            if extra:
                log_metrics(self.client, run_id, extra, int(last.get("step", 0) or 0))
        config_file = ckpt / "trial_config.yaml"
        if config_file.is_file():
            config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
            _log_clean(self.client, run_id, config_file, config, "trial_config.yaml")
        tags[OUTCOME_TAG] = "completed" if summary_file.is_file() else "stopped_early"
        return tags


def _log_clean(client: MlflowClient, run_id: str, path: Path, data: Any, artifact_file: str) -> None:
    """Log a JSON/YAML file as it is, or, if anything in it looks secret, a masked copy."""
    clean = sanitize(data)
    if clean == data:
        client.log_artifact(
            run_id, str(path), str(Path(artifact_file).parent) if "/" in artifact_file else None
        )
    elif artifact_file.endswith(".json"):
        client.log_dict(run_id, clean, artifact_file)
    else:
        client.log_text(run_id, yaml.safe_dump(clean, sort_keys=False), artifact_file)
