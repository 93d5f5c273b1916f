"""HF_TOKEN and the judge's API key, set in the environment, appear in nothing a sweep leaves behind.

A real sweep (`qlora-sweep run` in a subprocess, two tiny trials, the `openai` judge against a server
this test starts on 127.0.0.1, MLflow in sqlite, registry and report on) runs with both secrets set
to fresh random values. Then everything is scanned: every MLflow param, tag and metric key of every
run, the registry, every artifact (downloaded through MLflow), every file under storage_path (Ray's
result files and experiment state, checkpoints, the report), the verdict cache, Ray's session logs
and the driver's stdout/stderr. The judge server checks the key, so the test cannot pass by never
using it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import ROOT, LoopbackServer, QuietHandler
from mlflow import MlflowClient
from mlflow.entities import ViewType

from evaluation.judge import PAIRWISE_RUBRIC, RUBRIC

pytestmark = pytest.mark.slow


class JudgeServer(LoopbackServer):
    """An OpenAI-compatible chat endpoint that answers only `Authorization: Bearer <key>`."""

    def __init__(self, key: str) -> None:
        self.key, self.lock = key, threading.Lock()
        self.authorized = self.refused = 0
        owner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ok = self.headers.get("Authorization") == f"Bearer {owner.key}"
                with owner.lock:
                    owner.authorized += ok
                    owner.refused += not ok
                system = body["messages"][0]["content"]
                if not ok:
                    status, payload = 401, {"error": {"message": "invalid api key"}}
                elif system in (RUBRIC, PAIRWISE_RUBRIC):
                    verdict = (
                        {"winner": "A", "reason": "A reads better"}
                        if system == PAIRWISE_RUBRIC
                        else {"score": 6, "reason": "relevant but short"}
                    )
                    payload = {
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": json.dumps(verdict)}}
                        ]
                    }
                    status = 200
                else:
                    status, payload = 400, {"error": {"message": "unknown rubric"}}
                self.reply(status, json.dumps(payload))

        super().__init__(Handler)


def leaks(data: bytes, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value.encode() in data]


def scan_files(root: Path, values: dict[str, str]) -> tuple[int, list[str]]:
    """(files scanned, 'path: SECRET_NAME' for every file holding a secret's value)."""
    count, found = 0, []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            count += 1
            found += [f"{path}: {name}" for name in leaks(path.read_bytes(), values)]
    return count, found


def scan_mlflow(uri: str, values: dict[str, str], download_to: Path) -> tuple[int, list[str]]:
    """(runs scanned, leaks) over every experiment, run, param, tag, metric key, artifact and model version."""
    client = MlflowClient(tracking_uri=uri)
    found, runs = [], 0
    for exp in client.search_experiments(view_type=ViewType.ALL):
        texts = [exp.name, json.dumps(exp.tags)]
        for run in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            runs += 1
            texts += [
                run.info.run_name or "",
                json.dumps(run.data.params),
                json.dumps(run.data.tags),
                json.dumps(sorted(run.data.metrics)),
            ]
            dst = download_to / run.info.run_id
            dst.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(dst), tracking_uri=uri)
        found += [f"experiment {exp.name}: {name}" for name in leaks("\n".join(texts).encode(), values)]
    for model in client.search_registered_models():
        texts = [model.name, model.description or "", json.dumps(model.tags)]
        for version in client.search_model_versions(f"name='{model.name}'"):
            texts += [version.source or "", version.description or "", json.dumps(version.tags)]
        found += [
            f"registered model {model.name}: {name}" for name in leaks("\n".join(texts).encode(), values)
        ]
    _, in_artifacts = scan_files(download_to, values)
    return runs, found + in_artifacts


def test_the_scanner_finds_a_planted_secret(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "log.txt").write_text("token=hf_plantedplanted\n")
    assert scan_files(tmp_path, {"HF_TOKEN": "hf_plantedplanted"}) == (
        1,
        [f"{tmp_path}/a/b/log.txt: HF_TOKEN"],
    )


@pytest.fixture
def judge_key() -> str:
    return "sk-" + secrets.token_hex(20)


@pytest.fixture
def judge(judge_key) -> Iterator[JudgeServer]:
    server = JudgeServer(judge_key)
    yield server
    server.close()


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """Ray's session dir for the sweep (short: Ray's socket paths have a length limit)."""
    path = Path(tempfile.mkdtemp(prefix="qs-ray-", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_no_secret_reaches_mlflow_files_reports_or_logs(tmp_path, tiny_model_dir, judge, judge_key, ray_tmp):
    values = {"HF_TOKEN": "hf_" + secrets.token_hex(20), "JUDGE_KEY": judge_key}
    storage = tmp_path / "results"
    cfg = {
        "name": "secrets",
        "storage_path": str(storage),
        "model": {"path": "tiny"},
        "data": {"eval_rows": 30},
        "training": {
            "max_steps": 2,
            "eval_interval": 2,
            "batch_size": 4,
            "grad_accum": 1,
            "max_seq_len": 256,
            "eval_batches": 2,
        },
        "generation": {"num_prompts": 2, "max_new_tokens": 4},
        "judge": {
            "backend": "openai",
            "base_url": judge.base_url,
            "model": "judge-test",
            "api_key_env": "JUDGE_KEY",
            "cache_dir": str(tmp_path / "verdicts"),
            "retries": 0,
        },
        "search": {
            "space": {"lora.r": {"choice": [2, 4]}},
            "num_samples": 2,
            "max_concurrent_trials": 2,
            "scheduler": {"type": "none"},
        },
        "resources": {"cpu": 1, "gpu": 0},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(values, RAY_TMPDIR=str(ray_tmp), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    out = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=500,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "2 finished" in out.stdout and "0 failed" in out.stdout, out.stdout[-2000:]

    # The key was used: the calibration and every trial's generations were judged with it.
    assert judge.authorized >= 2 * cfg["generation"]["num_prompts"] and judge.refused == 0
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    trial_runs = client.search_runs(
        [client.get_experiment_by_name("secrets").experiment_id],
        filter_string="tags.`qlora_sweep.trial_id` != ''",
    )
    assert len(trial_runs) == 2 and all(r.data.metrics.get("judge_score") == 6 for r in trial_runs)

    assert not leaks(log.encode(), values), "a secret is in the driver's output"
    runs, found = scan_mlflow(uri, values, tmp_path / "downloaded")
    assert runs >= 3 and not found, found  # the sweep run and its two trials, at least
    n_files, found = scan_files(storage, values)
    assert not found, found
    names = {p.name for p in storage.rglob("*")}
    assert {"result.json", "mlflow.db", "report.md", "generations.json", "adapter_model.safetensors"} <= names
    assert any(n.startswith("experiment_state") for n in names) and n_files > 30
    for where in (tmp_path / "verdicts", ray_tmp):
        count, found = scan_files(where, values)
        assert count and not found, found
    assert list(ray_tmp.glob("ray/session_*/logs/worker-*")), (
        "Ray's session logs were not where the scan looked"
    )
