"""Real Ray Tune + Optuna sweeps on the tiny model: ASHA, initial points, failures, GPU packing."""

import pytest
import ray

from sweep.config import load_sweep_config
from sweep.runner import run_sweep

BASE = [
    "model.path=tiny", "data.eval_rows=30", "training.max_steps=8", "training.eval_interval=2",
    "training.batch_size=4", "training.grad_accum=1", "training.max_seq_len=256", "generation.num_prompts=1",
    "generation.max_new_tokens=4", "resources.cpu=1", "resources.gpu=0",
]


@pytest.fixture(scope="module")
def local_ray():
    # One fake GPU: Ray schedules fractional GPU requests onto it for real; the trials train on the CPU.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sweep_cfg(tmp_path, *sets):
    return load_sweep_config(None, [*BASE, f"storage_path={tmp_path}", *sets])


def test_asha_initial_points_failures_and_best(local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the bad hub id fails fast instead of timing out
    cfg = sweep_cfg(
        tmp_path, "name=asha", "max_failures=0", "search.num_samples=7", "search.max_concurrent_trials=2",
        "search.space={lora.r: {choice: [2, 4, 8]}, training.lr: {loguniform: [1e-4, 3e-2]}, "
        "model.path: {choice: [tiny, no-such-org/no-such-model]}}",
        "search.initial_points=[{lora.r: 8, training.lr: 0.01, model.path: tiny}, "
        "{lora.r: 2, training.lr: 0.001, model.path: no-such-org/no-such-model}]",
    )
    out = run_sweep(cfg)
    assert out.failed >= 1 and out.finished >= 4  # the bad model failed; the others went on
    assert any("no-such-org" in reason or "offline" in reason.lower() for reason in out.errors.values())
    assert out.stopped_early >= 1  # ASHA cut some trials at a rung
    assert out.best is not None and out.best["config"]["model"]["path"] == "tiny"
    assert out.best["metrics"]["eval_loss"] < out.best["metrics"]["base_eval_loss"]
    # Initial points come first: Ray numbers trials in creation order (_00001, _00002 ...).
    from ray.tune import ExperimentAnalysis

    trials = sorted(ExperimentAnalysis(out.experiment_path).trials, key=lambda t: t.trial_id)
    first = [t for t in trials if t.config["lora.r"] == 8 and t.config["training.lr"] == 0.01]
    assert first, "the first initial point was not evaluated"


def test_fractional_gpu_runs_two_trials_at_once(local_ray, tmp_path):
    cfg = sweep_cfg(tmp_path, "name=packed", "resources.gpu=0.5", "resources.cpu=1", "search.num_samples=2",
                    "search.max_concurrent_trials=2", "search.scheduler.type=none",
                    "search.space={lora.r: {choice: [2, 4]}}", "training.max_steps=6")
    from ray.tune import ExperimentAnalysis

    out = run_sweep(cfg)
    assert out.finished == 2
    spans = []
    for rows in ExperimentAnalysis(out.experiment_path).trial_dataframes.values():
        assert set(rows["gpu_ids"].astype(str)) == {"0"}  # both on the one GPU (Ray's assignment)
        spans.append((rows["wall_time"].iloc[0] - rows["elapsed_s"].iloc[0], rows["wall_time"].iloc[-1]))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"trials did not overlap: {spans}"
