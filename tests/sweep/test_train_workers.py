"""Trials as Ray Train workers: the same loop, N workers, one step equal to one big-batch step."""

import os

import pytest
import ray
import torch
from helpers import one_step_cfg, spawn_gloo
from safetensors.torch import load_file

from sweep.config import load_sweep_config
from sweep.runner import run_sweep
from trainables.model import load_adapter, load_base_model
from trainables.reporting import PrintReporter
from trainables.trial import run_trial


def _cfg(tiny, *sets):
    return one_step_cfg(tiny, "quantization.bits=16", *sets)


def _worker(rank, tiny, out):
    run_trial(_cfg(tiny), PrintReporter(f"{out}/rank{rank}", echo=lambda _: None))


def test_two_workers_on_half_batches_equal_one_worker(tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    single = PrintReporter(tmp_path / "single", echo=lambda _: None)
    run_trial(_cfg(tiny_model_dir), single)
    spawn_gloo(_worker, str(tiny_model_dir), str(tmp_path))
    one = load_file(str(single.checkpoint_dir(1) / "adapter" / "adapter_model.safetensors"))
    two = load_file(
        str(tmp_path / "rank0" / "checkpoints" / "step-0000001" / "adapter" / "adapter_model.safetensors")
    )
    assert not (tmp_path / "rank1" / "checkpoints").exists()  # only rank 0 writes the adapter
    changed = 0
    for key in one:
        # Adam's first step moves each weight by ~lr (1e-2) whatever the gradient's size, so a
        # near-zero gradient summed in another order may differ slightly: allow 1% of one step.
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-4)
        changed += int("lora_B" in key and one[key].abs().sum() > 0)
    assert changed > 0  # the step really moved the adapter
    import json

    def reported(path):
        return json.loads((path / "trainer_state.json").read_text())["last_metrics"]

    a, b = reported(single.checkpoint_dir(1)), reported(tmp_path / "rank0" / "checkpoints" / "step-0000001")
    assert b["workers"] == 2 and a["workers"] == 1
    for key in ("train_loss", "eval_loss"):  # reported metrics are the global ones, not per worker
        assert abs(a[key] - b[key]) < 1e-4 * abs(a[key]), (key, a[key], b[key])


def _sweep(tmp_path, name, *sets):
    """A sweep of 2-worker trials on the tiny model; returns its outcome, config and MLflow trial runs."""
    ray.init(num_cpus=4, log_to_driver=False)  # with the dashboard: Ray Train uses its state API
    try:
        cfg = load_sweep_config(
            None,
            [
                "model.path=tiny",
                "data.eval_rows=30",
                "training.max_steps=6",
                "training.eval_interval=2",
                "training.batch_size=4",
                "training.grad_accum=1",
                "training.max_seq_len=256",
                "training.lr=5e-3",
                "generation.num_prompts=1",
                "generation.max_new_tokens=4",
                f"storage_path={tmp_path}",
                f"name={name}",
                "resources.workers_per_trial=2",
                "resources.cpu=1",
                "resources.gpu=0",
                "search.max_concurrent_trials=1",
                "search.scheduler.type=none",
                "tracking.register_best=false",
                *sets,
            ],
        )
        out = run_sweep(cfg)
    finally:
        ray.shutdown()
    import mlflow

    client = mlflow.MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name(name)
    children = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    for run in children:  # one adapter per trial, logged once
        files = [f.path for f in client.list_artifacts(run.info.run_id, "adapter")]
        assert sum(p.endswith("adapter_model.safetensors") for p in files) == 1, files
    return out, cfg, client, children


@pytest.mark.slow
def test_sweep_of_two_worker_trials(tmp_path):
    out, *_, children = _sweep(
        tmp_path, "ddp", "search.num_samples=2", "search.space={lora.r: {choice: [2, 4]}}"
    )
    assert out.finished == 2 and out.failed == 0 and len(children) == 2
    m = out.best["metrics"]
    assert m["workers"] == 2 and m["world_rank"] == 0  # a real 2-process group; rank 0's report reached Tune
    assert m["eval_loss"] < m["base_eval_loss"]


@pytest.mark.slow
def test_sweep_of_fsdp_trial(tmp_path):
    out, cfg, client, children = _sweep(
        tmp_path,
        "fsdp",
        "resources.strategy=fsdp",
        "search.num_samples=1",
        "search.space={lora.r: {choice: [4]}}",
    )
    assert out.finished == 1 and out.failed == 0 and len(children) == 1
    m = out.best["metrics"]
    assert m["workers"] == 2 and m["world_rank"] == 0
    assert m["eval_loss"] < m["base_eval_loss"]
    adapter = client.download_artifacts(children[0].info.run_id, "adapter", str(tmp_path / "dl"))
    model = load_adapter(
        load_base_model(cfg.model, cfg.quantization), adapter
    )  # an ordinary, unsharded 4-bit model
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.arange(3, 19)[None]).logits).all()


def test_each_train_worker_is_held_to_its_gpu_share_and_the_sweeps_cap(monkeypatch):
    """A Ray Train worker is its own process: the Tune trial's environment does not reach it, so the
    worker sets its share and the sweep's memory cap itself (the GPU assignment is faked: no GPU here)."""
    import types

    from sweep import train_workers
    from trainables.memory import CAP_ENV, FRACTION_ENV

    seen = []
    context = types.SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1.0, "GPU": 0.5})
    monkeypatch.setattr(train_workers.ray, "get_runtime_context", lambda: context)
    monkeypatch.setattr(
        train_workers,
        "run_trial",
        lambda *a, **k: seen.append((os.environ[FRACTION_ENV], os.environ.get(CAP_ENV))),
    )
    monkeypatch.setattr(train_workers.TrialConfig, "model_validate", staticmethod(lambda d: d))
    monkeypatch.delenv(CAP_ENV, raising=False)
    monkeypatch.delenv(FRACTION_ENV, raising=False)
    train_workers._worker_loop({"trial": {}, "strategy": "ddp", "gpu_memory_gb": 24.0})
    train_workers._worker_loop({"trial": {}, "strategy": "ddp", "gpu_memory_gb": None})  # a reused worker
    assert seen == [("0.5", "24.0"), ("0.5", None)]
