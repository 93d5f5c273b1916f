"""Real Ray Tune + Optuna sweeps on the tiny model: ASHA, initial points, failures, GPU packing."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import ray
from helpers import TINY_SWEEP
from ray import tune

from sweep.config import load_sweep_config
from sweep.report import build_report
from sweep.runner import run_sweep
from sweep.tracking import child_runs, client_for
from trainables.builtin_models import tiny_model_dir
from trainables.sample_data import sample_path

BASE = TINY_SWEEP


@pytest.fixture(scope="module")
def local_ray():
    # One fake GPU: Ray schedules fractional GPU requests onto it for real; the trials train on the CPU.
    # Offline in the workers too (they never see a test's later setenv): a hub id that does not exist
    # fails at once instead of after ~45 s of connection attempts where the network is closed.
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    yield
    ray.shutdown()


def sweep_cfg(tmp_path, *sets):
    return load_sweep_config(None, [*BASE, f"storage_path={tmp_path}", *sets])


def test_asha_initial_points_and_best(local_ray, tmp_path):
    cfg = sweep_cfg(
        tmp_path,
        "name=asha",
        "search.num_samples=6",
        "search.max_concurrent_trials=2",
        "search.seed=1",
        "search.space={lora.r: {choice: [2, 4, 8]}, training.lr: {loguniform: [1e-4, 3e-2]}}",
        "search.initial_points=[{lora.r: 8, training.lr: 0.01}, {lora.r: 2, training.lr: 0.0001}]",
    )
    out = run_sweep(cfg)
    assert out.finished == 6 and out.failed == 0
    assert out.stopped_early >= 1  # ASHA cut some trials at a rung
    assert out.best is not None
    assert out.best["metrics"]["eval_loss"] < out.best["metrics"]["base_eval_loss"]
    from ray.tune import ExperimentAnalysis

    # Initial points come first: experiment_tag starts with the trial's creation index.
    trials = ExperimentAnalysis(out.experiment_path).trials
    first_two = sorted(trials, key=lambda t: int(t.experiment_tag.split("_")[0]))[:2]
    assert [(t.config["lora.r"], t.config["training.lr"]) for t in first_two] == [(8, 0.01), (2, 0.0001)]
    # Disk stays bounded: at most keep_checkpoints (+1 in flight) checkpoints per trial.
    for trial in trials:
        assert len(list(Path(trial.path).glob("checkpoint_*"))) <= cfg.training.keep_checkpoints + 1


def _sample_with_blank_descriptions(path: Path) -> Path:
    """The bundled 600 rows as a CSV in which 8 descriptions are blank."""
    rows = [json.loads(line) for line in sample_path().read_text(encoding="utf-8").splitlines()]
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["product", "category", "description"])
        for i, r in enumerate(rows):
            out.writerow([r["product"], r["category"], "" if i % 75 == 0 else r["description"]])
    return path


def test_a_failing_trial_does_not_stop_the_others(local_ray, tmp_path):
    """...and the finished trials' runs say how many rows their data lost (MLflow params, the report),
    and their adapters name the built-in base portably."""
    bad = "no-such-org/no-such-model"  # distinct configs: the sweep never trains one twice (sweep/dedup.py)
    points = f"[{{model.path: tiny, lora.r: 2}}, {{model.path: {bad}, lora.r: 2}}, {{model.path: tiny, lora.r: 4}}]"
    data = _sample_with_blank_descriptions(tmp_path / "blank.csv")
    cfg = sweep_cfg(
        tmp_path,
        "name=fail",
        "max_failures=0",
        "search.num_samples=3",
        "search.scheduler.type=none",
        f"search.space={{model.path: {{choice: [tiny, {bad}]}}, lora.r: {{choice: [2, 4]}}}}",
        f"search.initial_points={points}",
        "training.max_steps=2",
        f"data.source={data}",
    )
    out = run_sweep(cfg)
    assert (out.finished, out.failed) == (2, 1)
    (reason,) = out.errors.values()
    assert "no-such-org" in reason or "offline" in reason.lower(), reason

    client = client_for(cfg.tracking_uri())
    done = [r for r in child_runs(client, out.parent_run_id) if r.info.status == "FINISHED"]
    assert len(done) == 2
    for run in done:
        assert run.data.params["data.rows_dropped_blank"] == run.data.params["data.blank_description"] == "8"
        assert run.data.params["data.rows_read"] == "600"
        local = client.download_artifacts(run.info.run_id, "adapter/adapter_config.json", str(tmp_path))
        base = json.loads(Path(local).read_text())["base_model_name_or_path"]
        assert base == f"qlora-sweep:{tiny_model_dir().name}"
    md, _ = build_report(cfg.tracking_uri(), cfg.name, tmp_path / "report", parent_run_id=out.parent_run_id)
    assert "600 rows read" in md.read_text() and "8 rows dropped (blank description)" in md.read_text()


class StopOnceBothReported(tune.Stopper):
    """Keeps every trial training until two different trials have reported: if Ray ran the two
    0.5-GPU trials one after the other, the first would train to max_steps alone and never overlap."""

    def __init__(self):
        self.reported = set()

    def __call__(self, trial_id, result):
        self.reported.add(trial_id)
        return len(self.reported) >= 2

    def stop_all(self):
        return False


def test_fractional_gpu_runs_two_trials_at_once(local_ray, tmp_path):
    cfg = sweep_cfg(
        tmp_path,
        "name=packed",
        "resources.gpu=0.5",
        "resources.cpu=1",
        "search.num_samples=2",
        "search.max_concurrent_trials=2",
        "search.scheduler.type=none",
        "search.space={lora.r: {choice: [2, 4]}}",
        "training.max_steps=400",
    )
    from ray.tune import ExperimentAnalysis

    out = run_sweep(cfg, stop=StopOnceBothReported())
    assert out.finished == 2
    spans = []
    for rows in ExperimentAnalysis(out.experiment_path).trial_dataframes.values():
        assert set(rows["gpu_ids"].astype(str)) == {"0"}  # both on the one GPU (Ray's assignment)
        assert rows["step"].iloc[-1] < 400  # stopped by the other trial's report, not by running out
        spans.append((rows["wall_time"].iloc[0] - rows["time_total_s"].iloc[0], rows["wall_time"].iloc[-1]))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"trials did not overlap: {spans}"


def test_auto_gpu_share_spreads_concurrent_trials(local_ray, tmp_path):
    """Ray fills one GPU before the next, so 'auto' never packs tighter than concurrency needs."""
    from sweep.placement import auto_gpu_share, gpu_share

    cfg = sweep_cfg(tmp_path, "resources.gpu=auto", "search.max_concurrent_trials=2")
    assert auto_gpu_share(cfg) <= 0.5  # the tiny model alone would allow many per GPU
    assert gpu_share(cfg) == 0.5  # one (fake) GPU, two trials at once: half each


def test_trials_reuse_a_worker_and_its_base_model(local_ray, tmp_path):
    """Issue 22: concurrency is capped at what fits (2 CPUs, 2 per trial: one at a time), so each trial
    after the first runs on the finished trial's worker, whose base model is still loaded; every
    trial reports its phase timings. Issue 30: the base model's eval runs once for the sweep, no trial
    generates (no judge), and the best trial's samples beside the base's are generated once after it."""

    from sweep.placement import concurrent_trials
    from trainables.builtin_models import cache_dir
    from trainables.phases import PHASES

    shutil.rmtree(cache_dir() / "base_eval", ignore_errors=True)  # the same workers' cache dir

    cfg = sweep_cfg(
        tmp_path,
        "name=reuse",
        "resources.cpu=2",
        "search.num_samples=3",
        "search.max_concurrent_trials=3",
        "search.scheduler.type=none",
        "training.max_steps=2",
        "search.space={lora.r: {choice: [2, 4, 8]}}",
        "search.initial_points=[{lora.r: 2}, {lora.r: 4}, {lora.r: 8}]",
    )
    assert concurrent_trials(cfg) == 1
    out = run_sweep(cfg)
    assert (out.finished, out.failed) == (3, 0)
    from ray.tune import ExperimentAnalysis

    rows = sorted(
        (df.iloc[-1] for df in ExperimentAnalysis(out.experiment_path).trial_dataframes.values()),
        key=lambda r: r["wall_time"],
    )
    for row in rows:
        assert all(row[f"phase_{name}_s"] >= 0 for name in PHASES) and row["phase_train_s"] > 0
    assert [bool(r["base_reused"]) for r in rows] == [False, True, True]
    assert len({r["pid"] for r in rows}) == 1  # one worker process ran all three
    assert max(r["phase_load_s"] for r in rows[1:]) < rows[0]["phase_load_s"]
    assert [bool(r["base_eval_shared"]) for r in rows] == [False, True, True]
    assert list(out.driver)[:4] == ["ray_start", "setup", "trials", "samples"] and out.driver["trials"] > 0
    took = {k: v for k, v in out.driver.items() if k.startswith("samples_")}  # the sampler's own phases
    assert {"samples_start", "samples_generate"} <= set(took) and took["samples_generate"] > 0
    # One machine: the driver generated them itself (no sampler process), its libraries' output in a log.
    assert "samples starts" in (tmp_path / "reuse" / "samples.log").read_text()
    parent = client_for(cfg.tracking_uri()).get_run(out.parent_run_id).data.metrics
    assert parent["driver_trials_s"] == pytest.approx(out.driver["trials"]) and parent["driver_samples_s"] > 0
    assert len({r["base_eval_loss"] for r in rows}) == 1
    assert all(r["phase_generation_s"] == 0 for r in rows)  # no judge: no trial generated
    best_eval = Path(out.best["checkpoint"]) / "eval"
    tuned = json.loads((best_eval / "generations.json").read_text())
    base = json.loads((best_eval / "base_generations.json").read_text())
    assert len(tuned) == len(base) == 1 and tuned[0]["prompt"] == base[0]["prompt"]
    md = build_report(cfg.tracking_uri(), cfg.name, tmp_path / "report", parent_run_id=out.parent_run_id)[
        0
    ].read_text()
    assert "Sample generations: base against best" in md and tuned[0]["product"] in md


def test_the_driver_makes_the_samples_only_where_it_started_ray_on_this_node_alone(
    local_ray, tmp_path, monkeypatch
):
    """One node, the driver's own, with the (fake) GPU a GPU sweep asks for: the driver generates. A
    joined Ray (a submitted job, an instance others share: RAY_ADDRESS) or a GPU sweep on a node without
    a GPU: a Ray actor does, with Ray's accounting (the two-node case: tests/sweep/test_samples_cluster.py)."""
    from sweep.samples import samples_here

    assert samples_here(sweep_cfg(tmp_path)) and samples_here(sweep_cfg(tmp_path, "resources.gpu=0.5"))
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    assert not samples_here(sweep_cfg(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(ray, "nodes", lambda: [{**n, "Resources": {"CPU": 2.0}} for n in ray.state.nodes()])
    assert samples_here(sweep_cfg(tmp_path)) and not samples_here(sweep_cfg(tmp_path, "resources.gpu=0.5"))


def test_a_sweep_in_uri_storage_is_sampled_and_named_by_its_uri(local_ray, tmp_path, monkeypatch):
    """Ray names a checkpoint in s3:// or gs:// storage by its path on the bucket, without the scheme:
    the sweep hands the URI back, and samples the best trial through the storage's filesystem. Here
    the URI is file://, pyarrow's local filesystem behind a URI (no bucket is reachable from CI)."""
    monkeypatch.chdir(tmp_path)  # a URI storage's driver log goes where its report does: ./<name>/
    store = tmp_path / "store"
    cfg = sweep_cfg(
        tmp_path,
        "name=uri",
        f"storage_path=file://{store}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "search.num_samples=2",
        "search.max_concurrent_trials=2",
        "search.scheduler.type=none",
        "search.space={training.max_steps: {choice: [2, 4]}}",
    )
    out = run_sweep(cfg)
    assert (out.finished, out.failed) == (2, 0)
    ckpt = out.best["checkpoint"]
    assert ckpt.startswith(f"file://{store}/uri/") and out.experiment_path == f"file://{store}/uri"
    tuned = json.loads((Path(ckpt.removeprefix("file://")) / "eval" / "generations.json").read_text())
    assert len(tuned) == 1 and tuned[0]["output"]
    assert "samples starts" in (tmp_path / "uri" / "samples.log").read_text()
    md = build_report(cfg.tracking_uri(), cfg.name, tmp_path / "report", parent_run_id=out.parent_run_id)[
        0
    ].read_text()
    assert "Sample generations: base against best" in md and tuned[0]["product"] in md
