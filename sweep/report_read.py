"""What the report reads back from MLflow: the sweep's parent run, one `Trial` per child run (params,
final metrics, loss histories, when it ran), and the artifacts a person reads (generations).

Everything the report says comes from the tracking store, so `qlora-sweep report` works on any
finished or interrupted sweep, on any machine that can reach the store.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evaluation.errors import ConfigError
from sweep.tracking import FAILURE_TAG, OUTCOME_TAG, ROLE_TAG, TRIAL_ID_TAG, child_runs

NULL = (None, "", "null", "None")


@dataclass
class Trial:
    run_id: str
    label: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    start_ms: int | None = None  # the MLflow run's start and end: when the driver saw the trial start
    end_ms: int | None = None

    @property
    def stopped_early(self) -> bool:
        return self.tags.get(OUTCOME_TAG) == "stopped_early"

    def status_text(self) -> str:
        if self.status == "FAILED":
            return f"FAILED: {self.tags.get(FAILURE_TAG, 'unknown reason')}"
        if self.status == "KILLED":
            return "KILLED"
        return "STOPPED EARLY" if self.stopped_early else self.status


def parse_param(value: str) -> Any:
    """MLflow keeps params as strings; recover numbers, lists and None."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def find_parent(client, experiment_name: str, parent_run_id: str | None):
    """The sweep's parent run: the one named, else the experiment's latest sweep run."""
    if parent_run_id:
        return client.get_run(parent_run_id)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        known = ", ".join(e.name for e in client.search_experiments(max_results=50)) or "none"
        raise ConfigError("experiment", experiment_name, f"an MLflow experiment in this store: {known}")
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ConfigError(
            "experiment", experiment_name, "an experiment with a sweep run (started by `qlora-sweep run`)"
        )
    return runs[0]


def read_trials(client, parent_run_id: str) -> list[Trial]:
    out = []
    for run in child_runs(client, parent_run_id):
        t = Trial(
            run_id=run.info.run_id,
            label=run.data.tags.get(TRIAL_ID_TAG) or run.info.run_name,
            status=run.info.status,
            params={k: parse_param(v) for k, v in run.data.params.items()},
            metrics=dict(run.data.metrics),
            tags=dict(run.data.tags),
            start_ms=run.info.start_time,
            end_ms=run.info.end_time,
        )
        # GPU utilisation (sweep/gpu_usage.py) is drawn at the times of the reports that carried it.
        keys = ("eval_loss", "train_loss") + (("gpu_util", "wall_time") if "gpu_util" in t.metrics else ())
        for key in keys:
            t.history[key] = [(m.step, m.value) for m in client.get_metric_history(t.run_id, key)]
        out.append(t)
    return out


def artifact_text(client, run_id: str, path: str) -> str | None:
    """An artifact's text, or None when the run never logged it."""
    parent = str(Path(path).parent) if "/" in path else None
    if path not in {f.path for f in client.list_artifacts(run_id, parent)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")


def _rows(text: str | None) -> list[dict]:
    """Generations as a list of dicts, from `log_table`'s {columns, data} or a plain list."""
    if not text:
        return []
    data = json.loads(text)
    if isinstance(data, dict) and "columns" in data:
        return [dict(zip(data["columns"], row, strict=False)) for row in data["data"]]
    return data if isinstance(data, list) else []


def generations(client, best: Trial, parent_run_id: str) -> tuple[list[dict], dict[str, dict]]:
    """The best trial's generations and the base model's, by prompt: the one place the report reads
    them (today the trial's `eval/generations.json` and the sweep run's `eval/base_generations.json`)."""
    tuned = _rows(artifact_text(client, best.run_id, "eval/generations.json"))
    base = _rows(artifact_text(client, parent_run_id, "eval/base_generations.json")) if tuned else []
    return tuned, {r.get("prompt"): r for r in base}
