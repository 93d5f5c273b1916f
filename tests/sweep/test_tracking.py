"""MLflow tracking of a real Ray Tune sweep: parent + nested trial runs, failures, artifacts, resume.

Runs against a sqlite store and against a real `mlflow server` on 127.0.0.1. The trainable follows
the trainables' reporting contract but trains nothing: it copies a real (tiny, random) peft LoRA
adapter into every checkpoint, so what we log is what a real trial would produce.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
import ray
import yaml
from ray import tune
from ray.cloudpickle import register_pickle_by_value

from sweep.tracking import (
    FAILURE_TAG,
    TRIAL_ID_TAG,
    MlflowTrialCallback,
    child_runs,
    client_for,
    finish_sweep_run,
    start_sweep_run,
)
from sweep.tracking_params import safe_params
from trainables.builtin_models import cache_dir, tiny_model_dir

register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules by name

STEPS = (2, 4, 6)
SECRET = "sk-test0123456789abcdefXYZ"
# What trainables.data.prepare_data counts for a 40-row file with 8 blank descriptions (the trial
# reports it as `data_stats` with every result; tests/trainables/test_data.py checks the counting).
DATA_STATS = {
    **{"dataset": "blank.csv", "dataset_hash": "abc123", "rows_read": 40, "train_rows": 26, "eval_rows": 6},
    **{"rows_dropped_blank": 8, "blank_product": 0, "blank_category": 0, "blank_description": 8},
    **{"rows_dropped_duplicate": 0, "overlong_rows": 0, "overlong_policy": "truncate"},
    **{"rows_dropped_overlong": 0, "rows_beyond_max_rows": 0, "train_tokens": 999},
}


def fake_trainable(config: dict) -> None:
    """Reports at steps 2, 4, 6 with a checkpoint each; fails at step 4 while the flag file exists."""
    start = 0
    if tune.get_checkpoint():
        with tune.get_checkpoint().as_directory() as d:
            start = json.loads(Path(d, "trainer_state.json").read_text())["step"]
    r, lr = config["lora"]["r"], config["training"]["lr"]
    for step in (s for s in STEPS if s > start):
        if r == 8 and step == 4 and os.path.exists(config["fail_flag"]):
            raise ValueError(f"lr {lr} diverged at step {step}\nsecond line of detail")
        final = step == STEPS[-1]
        loss = 3.0 / (1 + step * r * lr * 100)
        metrics = {
            "step": step,
            "epoch": step / 6,
            "train_loss": loss + 0.1,
            "eval_loss": loss,
            "perplexity": 2.718**loss,
            "base_eval_loss": 3.0,
            "tokens_per_s": 100.0 * r,
            "peak_mem_gb": 0.1 * r,
            "trainable_params": 1000 * r,
            "elapsed_s": float(step),
            "gpu_seconds": float(step) * r,
            "trial_status": "running",
            "data_stats": DATA_STATS,
        }
        d = Path(tempfile.mkdtemp(prefix="fake_ckpt_"))
        shutil.copytree(config["adapter_src"], d / "adapter")
        shutil.copytree(config["tokenizer_src"], d / "tokenizer")
        state = {"step": step, "base_model_path": config["base_path"]}  # as trainables.checkpoint writes it
        (d / "trainer_state.json").write_text(json.dumps(state))
        if final:
            metrics.update(judge_score=3.0 + r / 8, judge_missing=0, done=True)
            (d / "eval").mkdir()
            rows = [
                {
                    "product": f"p{i}",
                    "category": "c",
                    "prompt": f"describe p{i}",
                    "output": f"out {i} r={r}",
                    "reference": f"ref {i}",
                    "length": 3,
                    "judge_score": 4.0,
                    "judge_reason": "ok",
                }
                for i in range(3)
            ]
            (d / "eval" / "generations.json").write_text(json.dumps(rows))
            (d / "eval" / "summary.json").write_text(json.dumps({**metrics, "dataset_hash": "abc123"}))
            (d / "trial_config.yaml").write_text(yaml.safe_dump({"lora": {"r": r}, "training": {"lr": lr}}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(d)))
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """A real peft LoRA adapter of the built-in tiny model, saved as trials save it (its base named
    portably), and the tiny model's tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainables.checkpoint import save_adapter

    root = tmp_path_factory.mktemp("tiny")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "tokenizer")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    save_adapter(get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])), root / "adapter")
    return root / "adapter", root / "tokenizer"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, start_mlflow_server):
    """A real `mlflow server` on a free 127.0.0.1 port, ready when /health answers."""
    with start_mlflow_server(tmp_path_factory.mktemp("server")) as url:
        yield url


def run_sweep(tracking_uri: str, storage: Path, adapter_files, fail_flag: Path, restore: bool) -> str:
    sweep_cfg = {
        "name": "tiny-sweep",
        "storage_path": str(storage),
        "search": {"metric": "eval_loss", "mode": "min"},
        "judge": {"api_key": SECRET, "api_key_env": "OPENAI_API_KEY"},
        "data": {"eval_rows": 30},  # base-only: children get it from the sweep run, not trial.config
    }
    parent = start_sweep_run(tracking_uri, "exp-tracking", sweep_cfg, ["lora.r"])
    if restore:  # Tune unpickles the callback (fresh client, empty cache) from its experiment state
        tuner = tune.Tuner.restore(str(storage / "tiny-sweep"), trainable=fake_trainable, resume_errored=True)
    else:
        callback = MlflowTrialCallback(tracking_uri, "exp-tracking", parent, strict=True)
        space = {
            "model": {"path": "tiny", "revision": "main"},
            "data": {"source": "sample"},
            "lora": {"r": tune.grid_search([4, 8, 16]), "target_modules": ["q_proj", "v_proj"]},
            "training": {"lr": 1e-3},
            "judge": {"api_key": SECRET},
            "adapter_src": str(adapter_files[0]),
            "tokenizer_src": str(adapter_files[1]),
            "fail_flag": str(fail_flag),
            "base_path": str(tiny_model_dir()),
        }
        tuner = tune.Tuner(
            fake_trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric="eval_loss", mode="min"),
            run_config=tune.RunConfig(
                name="tiny-sweep", storage_path=str(storage), callbacks=[callback], verbose=0
            ),
        )
    tuner.fit()
    assert finish_sweep_run(tracking_uri, parent) == "FINISHED"
    return parent


def check_first_run(tracking_uri: str, parent: str) -> dict[str, str]:
    client = client_for(tracking_uri)
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.params["judge.api_key"] == "***"
    assert client.get_run(parent).data.params["judge.api_key_env"] == "OPENAI_API_KEY"
    children = child_runs(client, parent)
    assert len(children) == 3
    by_r = {int(c.data.params["lora.r"]): c for c in children}
    assert {r.info.status for r in children} == {"FINISHED", "FAILED"}
    assert by_r[8].info.status == "FAILED"
    assert by_r[8].data.tags[FAILURE_TAG] == "ValueError: lr 0.001 diverged at step 4"
    for r in (4, 16):
        run = by_r[r]
        assert run.info.status == "FINISHED"
        assert run.data.params["judge.api_key"] == "***"
        assert SECRET not in json.dumps(run.data.params)
        assert run.data.params["lora.target_modules"] == '["q_proj", "v_proj"]'
        assert run.data.params["data.eval_rows"] == "30" and "search.metric" not in run.data.params
        assert run.data.tags["base_model_name"] == f"qlora-sweep:{tiny_model_dir().name}"
        assert run.data.tags["base_model_path"] == str(tiny_model_dir())  # the local path: a tag only
        assert "built by qlora-sweep" in run.data.tags["base_model_source"]
        assert run.data.tags["base_model"] == "tiny" and run.data.tags["dataset_hash"] == "abc123"
        assert run.data.tags["dataset"] == "sample" and run.data.tags["base_revision"] == "main"
        history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert sorted(m.step for m in history) == list(STEPS)
        assert "trial_status" not in run.data.metrics and run.data.metrics["judge_score"] == 3.0 + r / 8
        with tempfile.TemporaryDirectory() as d:
            local = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="adapter", dst_path=d, tracking_uri=tracking_uri
            )
            names = set(os.listdir(local))
            assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
            assert "base_model.json" in names  # where the base came from
            adapter_config = Path(local, "adapter_config.json").read_text()
            assert f'"qlora-sweep:{tiny_model_dir().name}"' in adapter_config
            assert str(cache_dir()) not in adapter_config
            gens = json.loads(
                Path(client.download_artifacts(run.info.run_id, "eval/generations.json", d)).read_text()
            )
            assert gens["columns"][0] == "product" and len(gens["data"]) == 3
            cfg = yaml.safe_load(
                Path(client.download_artifacts(run.info.run_id, "trial_config.yaml", d)).read_text()
            )
            assert cfg["lora"]["r"] == r
    for run in children:  # every trial, the failed one too: the data accounting is in its params
        assert run.data.params["data.rows_dropped_blank"] == run.data.params["data.blank_description"] == "8"
        assert (run.data.params["data.rows_read"], run.data.params["data.rows_train"]) == ("40", "26")
        assert "rows_dropped_blank" not in run.data.metrics  # a count of the data, not a measurement
    failed_history = client.get_metric_history(by_r[8].info.run_id, "eval_loss")
    assert [m.step for m in failed_history] == [2]
    return {c.data.tags[TRIAL_ID_TAG]: c.info.run_id for c in children}


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_sweep_runs_and_resume_without_duplicates(store, request, ray_local, adapter_files, tmp_path):
    storage = tmp_path / "ray"
    tracking_uri = (
        request.getfixturevalue("mlflow_server") if store == "server" else f"sqlite:///{tmp_path}/mlflow.db"
    )
    fail_flag = tmp_path / "fail_once"
    fail_flag.touch()
    parent = run_sweep(tracking_uri, storage, adapter_files, fail_flag, restore=False)
    first = check_first_run(tracking_uri, parent)

    fail_flag.unlink()  # the errored trial succeeds when restarted from its step-2 checkpoint
    assert run_sweep(tracking_uri, storage, adapter_files, fail_flag, restore=True) == parent
    client = client_for(tracking_uri)
    children = child_runs(client, parent)
    assert {c.data.tags[TRIAL_ID_TAG]: c.info.run_id for c in children} == first  # same runs, no new ones
    assert all(c.info.status == "FINISHED" for c in children)
    retried = next(c for c in children if c.data.params["lora.r"] == "8")
    assert FAILURE_TAG not in retried.data.tags and retried.data.tags["qlora_sweep.restarts"] == "1"
    steps = sorted(m.step for m in client.get_metric_history(retried.info.run_id, "eval_loss"))
    assert steps == list(STEPS)
    parents = client.search_runs(
        [client.get_run(parent).info.experiment_id], "tags.`qlora_sweep.role` = 'sweep'"
    )
    assert len(parents) == 1


def test_finish_kills_runs_left_running(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = start_sweep_run(uri, "exp-kill", {"name": "s"}, {"lora.r": [4, 8]})
    client = client_for(uri)
    exp = client.get_run(parent).info.experiment_id
    alive = client.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_ID_TAG: "t1"}).info.run_id
    dead = client.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_ID_TAG: "t2"}).info.run_id
    client.set_terminated(dead, "FAILED")
    assert finish_sweep_run(uri, parent) == "FINISHED"
    assert client.get_run(alive).info.status == "KILLED"
    assert client.get_run(alive).data.tags[FAILURE_TAG].startswith("killed:")
    client.set_terminated(alive, "FAILED")
    assert finish_sweep_run(uri, parent) == "FAILED"  # every trial failed
    assert json.loads(client.get_run(parent).data.params["search.space"]) == {"lora.r": [4, 8]}


def test_resumed_sweep_logs_the_same_params_as_its_first_run(tmp_path, caplog):
    """`resume` reads the config back from the experiment's sweep_config.yaml: float fields with
    whole defaults (lora.alpha 16, training.epochs 3) must not turn into new values ("16.0")."""
    from sweep.config import SweepConfig

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = SweepConfig.model_validate({"name": "again", "model": {"path": "tiny"}})
    saved = SweepConfig.model_validate(yaml.safe_load(yaml.safe_dump(first.model_dump())))
    runs = [
        start_sweep_run(uri, "exp-again", cfg.model_dump(), cfg.search.space, storage_path=str(tmp_path))
        for cfg in (first, saved)
    ]
    assert runs[0] == runs[1]  # the resumed sweep reopened its run
    assert "keeps its first value" not in caplog.text
    params = client_for(uri).get_run(runs[0]).data.params
    assert (params["lora.alpha"], params["training.epochs"]) == ("16.0", "3.0")


def test_params_mask_secrets(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plain-looking-but-secret-value")
    params = safe_params(
        {
            "judge": {"api_key": "abc", "api_key_env": "MY_SERVICE_TOKEN", "base_url": "http://x"},
            "data": {"source": "hf://plain-looking-but-secret-value"},
            "hf_token": None,
            "note": "Bearer abcdefghijklmnop",
            "lora": {"r": 8, "target_modules": ["q_proj"]},
            "generation": {"max_new_tokens": 96},
            "secrets": {"HF_TOKEN": "x", "aws_secret_access_key": "y", "password": "z", "tokenizer": "bpe"},
            "long": "x" * 7000,
        }
    )
    assert params["judge.api_key"] == "***" and params["judge.api_key_env"] == "MY_SERVICE_TOKEN"
    assert params["data.source"] == "***" and params["note"] == "***"
    assert params["hf_token"] == "null" and params["judge.base_url"] == "http://x"
    assert params["lora.r"] == "8" and params["lora.target_modules"] == '["q_proj"]'
    assert len(params["long"]) == 6000
    assert params["generation.max_new_tokens"] == "96" and params["secrets.tokenizer"] == "bpe"
    assert {params[f"secrets.{k}"] for k in ("HF_TOKEN", "aws_secret_access_key", "password")} == {"***"}


def test_open_store_creates_a_new_sqlite_store_ahead(tmp_path):
    """The CLI opens the sweep's store beside Ray's start (sweep/tracking_runs.py): the tables exist
    before the sweep's setup, in a storage directory not made yet; a server URI is left alone."""
    import sqlite3

    from sweep.tracking_runs import open_store

    db = tmp_path / "not-yet" / "mlflow.db"
    open_store(f"sqlite:///{db}")
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"experiments", "runs", "registered_models"} <= tables
    open_store("http://127.0.0.1:9")  # nothing listens there: returns at once, no retries, no error
    (tmp_path / "a-file").touch()
    blocked = tmp_path / "a-file" / "mlflow.db"  # under a file: cannot be made
    open_store(f"sqlite:///{blocked}")  # no error here: the sweep's own first call raises it
    assert not blocked.exists()
