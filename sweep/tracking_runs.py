"""The sweep's parent run in MLflow and the lookups around it (re-exported by `sweep.tracking`).

One parent run per sweep, found again on resume by its sweep-name and storage-path tags; one child
run per trial, found by the tag `qlora_sweep.trial_id` under the parent. All through `MlflowClient`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from sweep.tracking_params import (
    code_version,
    flatten_dict,
    numeric_metrics,
    safe_params,
    safe_value,
    sanitize,
)
from trainables.provenance import config_hash

logger = logging.getLogger(__name__)

TRIAL_ID_TAG = "qlora_sweep.trial_id"
ROLE_TAG = "qlora_sweep.role"
SWEEP_NAME_TAG = "qlora_sweep.sweep_name"
STORAGE_TAG = "qlora_sweep.storage_path"
OUTCOME_TAG = "qlora_sweep.outcome"
CONFIG_HASH_TAG = "qlora_sweep.config_hash"
PARENT_TAG = "mlflow.parentRunId"
FAILURE_TAG = "failure_reason"


def client_for(tracking_uri: str) -> MlflowClient:
    """A client whose model registry lives in the same store as the runs."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def open_store(tracking_uri: str) -> None:
    """Open the tracking store once, ahead of the sweep: a new sqlite store creates its tables on first
    use (~2 s of migrations), which the CLI does beside Ray's start (sweep/ray_start.py) instead of
    in the sweep's setup. MLflow keeps the opened store for the process. Best effort: the sweep's own
    first call reports any error. A server's store is not touched here: nothing to create, and an
    unreachable one would hold the CLI through MLflow's retries."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    try:
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        client_for(tracking_uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - the sweep's own first call raises it again, in its place
        logger.debug("tracking store %s not opened ahead: %s", tracking_uri, e)


def log_params(
    client: MlflowClient, run_id: str, params: Mapping[str, str], existing: Mapping[str, str] | None = None
) -> None:
    """Log params not yet on the run (MLflow params are immutable; a changed value only warns)."""
    existing = client.get_run(run_id).data.params if existing is None else existing
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
    if changed:
        logger.warning("run %s keeps its first value for changed params: %s", run_id, ", ".join(changed))
    for i in range(0, len(new), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=new[i : i + 100])


def log_metrics(
    client: MlflowClient,
    run_id: str,
    metrics: Mapping[str, float],
    step: int,
    tags: Mapping[str, str] | None = None,
) -> None:
    """One request for the usual report (MLflow takes up to 1000 metrics per batch)."""
    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, step) for k, v in metrics.items()]
    tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, max(len(batch), 1), 1000):
        client.log_batch(run_id, metrics=batch[i : i + 1000], tags=tag_list if i == 0 else [])


# ---------------------------------------------------------------- the sweep (parent) run


def _artifact_location(tracking_uri: str) -> str | None:
    """For a sqlite store, artifacts go next to the db (MLflow's default would be ./mlruns of the cwd)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def experiment_id(client: MlflowClient, tracking_uri: str, name: str) -> str:
    """The id of experiment `name`, creating (or restoring a deleted) one."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(tracking_uri))
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _pick(flat: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        if flat.get(key) not in (None, ""):
            return str(flat[key])
    return None


def start_sweep_run(
    tracking_uri: str,
    experiment_name: str,
    sweep_config: Mapping[str, Any],
    search_space_desc: Any,
    *,
    sweep_name: str | None = None,
    storage_path: str | None = None,
    new: bool = False,
    written: Mapping[str, Any] | None = None,
) -> str:
    """Open (or, on resume, reopen) the sweep's parent run and return its id.

    The parent is identified by the sweep name and storage path tags, so resuming a sweep reuses
    its run (the newest of that name and storage) instead of starting another one. Both default to
    the config's `name`/`storage_path` (top level or under `run.`/`sweep.`), else the experiment name
    and "". `search_space_desc` (the swept dotted paths, a list or a path->spec mapping) is logged as
    param `search.space`. `new` starts another parent run even if one exists: a new sweep under a
    reused name (`run --overwrite`) never joins the old one. The config hash is a tag: of `written`,
    the config as the user wrote it (what the experiment's record hashes), when the params logged are
    the resolved ones (search settings filled for the sweep's width).
    """
    client = client_for(tracking_uri)
    flat = flatten_dict(sweep_config)
    sweep_name = sweep_name or _pick(flat, ("name", "run.name", "sweep.name")) or experiment_name
    storage_path = (
        storage_path or _pick(flat, ("storage_path", "run.storage_path", "sweep.storage_path")) or ""
    )
    exp_id = experiment_id(client, tracking_uri, experiment_name)
    filt = (
        f"tags.`{ROLE_TAG}` = 'sweep' and tags.`{SWEEP_NAME_TAG}` = '{quote(sweep_name)}'"
        f" and tags.`{STORAGE_TAG}` = '{quote(storage_path)}'"
    )
    found = (
        []
        if new
        else client.search_runs(
            [exp_id], filter_string=filt, order_by=["attributes.start_time DESC"], max_results=1
        )
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "qlora_sweep.resumed", "true")
    else:
        tags = {
            ROLE_TAG: "sweep",
            SWEEP_NAME_TAG: sweep_name,
            STORAGE_TAG: storage_path,
            CONFIG_HASH_TAG: config_hash(dict(written or sweep_config)),
            "code_version": code_version(),
        }
        run_id = client.create_run(exp_id, run_name=sweep_name, tags=tags).info.run_id
    params = safe_params({k: v for k, v in flat.items() if k != "search.space"})
    params["search.space"] = safe_value("search.space", search_space_desc)
    log_params(client, run_id, params)
    client.log_text(
        run_id, yaml.safe_dump(sanitize(dict(sweep_config)), sort_keys=False), "sweep_config.yaml"
    )
    return run_id


def quote(value: str) -> str:
    return value.replace("'", "\\'")


def child_runs(client: MlflowClient, parent_run_id: str) -> list:
    """Every (non-deleted) trial run of a sweep."""
    exp_id = client.get_run(parent_run_id).info.experiment_id
    filt = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=filt, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finish_sweep_run(tracking_uri: str, parent_run_id: str, reason: str = "the sweep ended first") -> str:
    """End the sweep: kill children still RUNNING (with a reason), then end the parent.

    The parent ends FAILED when every trial failed, else FINISHED. Idempotent: the callback's
    `on_experiment_end` and the driver both call it. Returns the parent's final status.
    """
    client = client_for(tracking_uri)
    children = child_runs(client, parent_run_id)
    for run in children:
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, FAILURE_TAG, f"killed: {reason}")
            client.set_terminated(run.info.run_id, status="KILLED")
    statuses = [r.info.status for r in children]
    status = "FAILED" if statuses and all(s == "FAILED" for s in statuses) else "FINISHED"
    client.set_terminated(parent_run_id, status=status)
    return status


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str):
    """The (first) run of Tune trial `trial_id` under the sweep run, or None."""
    filt = f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{quote(str(trial_id))}'"
    found = client.search_runs(
        [experiment_id], filter_string=filt, order_by=["attributes.start_time ASC"], max_results=1
    )
    return found[0] if found else None


def trial_run_id(tracking_uri: str, parent_run_id: str, trial_id: str) -> str | None:
    """The MLflow run id of Tune trial `trial_id` in the sweep, or None if it never started."""
    client = client_for(tracking_uri)
    run = find_trial_run(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id, trial_id)
    return run.info.run_id if run else None


def log_calibration(tracking_uri: str, parent_run_id: str, calibration: Mapping[str, Any]) -> None:
    """The judge's calibration on the sweep run: numbers as metrics, `judge_trusted` as a tag, all as JSON."""
    client = client_for(tracking_uri)
    metrics = {
        k: v for k, v in numeric_metrics(calibration).items() if k != "judge_trusted" and math.isfinite(v)
    }
    tags = (
        {"judge_trusted": str(bool(calibration["judge_trusted"])).lower()}
        if "judge_trusted" in calibration
        else {}
    )
    log_metrics(client, parent_run_id, metrics, step=0, tags=tags)
    client.log_dict(parent_run_id, dict(calibration), "eval/judge_calibration.json")


def log_base_generations(tracking_uri: str, parent_run_id: str, rows: list[dict]) -> None:
    """The base model's generations for the held-out prompts (the report shows them beside the best's)."""
    client_for(tracking_uri).log_dict(parent_run_id, rows, "eval/base_generations.json")


def log_generations(client, run_id: str, rows: list[dict]) -> None:
    """A trial's generations as an MLflow table (the report shows the best's beside the base's)."""
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        client.log_table(run_id, {c: [row.get(c) for row in rows] for c in columns}, "eval/generations.json")
