"""The sweep's samples on a cluster of two Ray nodes (both on this host, Ray's own test cluster): the
driver's node runs no trial, so the samples come from a Ray actor started while the last trial runs.
On one machine the driver makes them itself (tests/sweep/test_runner.py)."""

import json
import shutil
import time
from pathlib import Path

import pytest
import ray
from helpers import TINY_SWEEP
from ray import tune
from ray.cluster_utils import Cluster

from sweep.config import load_sweep_config
from sweep.preflight import SHARED_ENV
from sweep.runner import run_sweep
from sweep.samples import samples_here


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head without CPUs (the driver's node: no trial or actor lands there) and a worker with two,
    with a node cache of their own (the test's process uses it too)."""
    cache = tmp_path_factory.mktemp("node-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QLORA_SWEEP_CACHE", str(cache))  # the nodes' processes inherit it
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        cluster.add_node(num_cpus=2)
        env = {"HF_HUB_OFFLINE": "1", "QLORA_SWEEP_CACHE": str(cache)}
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": env})
        yield
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def mlflow_url(start_mlflow_server, tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1: a sweep over two nodes refuses a node-local store."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


class UntilWritten(tune.Stopper):
    """Stops every trial that reports once a JSON file is in `folder`, or `limit_s` after the first
    report (the sampler never wrote: the test's assertions then fail at once, not 5,000 steps later)."""

    def __init__(self, folder: Path, limit_s: float = 300.0):
        self.folder, self.limit_s, self.first = folder, limit_s, None

    def __call__(self, trial_id, result) -> bool:
        self.first = self.first or time.monotonic()
        return any(self.folder.glob("*.json")) or time.monotonic() - self.first > self.limit_s

    def stop_all(self) -> bool:
        return False


def test_samples_are_prepared_while_the_last_trial_runs(two_nodes, mlflow_url, tmp_path, monkeypatch):
    """Issue 30: once every trial has started and one has ended, the sampler takes its freed share and
    loads the base and generates its samples while the other trial still trains; after the sweep only
    the best adapter's generation is left. The samples are those a sampler started afterwards makes."""
    from trainables.builtin_models import cache_dir
    from trainables.config import TrialConfig
    from trainables.evaluate import sample_generations

    cfg = load_sweep_config(
        None,
        [
            *TINY_SWEEP,
            f"storage_path={tmp_path}",
            f"tracking.tracking_uri={mlflow_url}",
            "name=prewarm",
            "search.num_samples=2",
            "search.max_concurrent_trials=2",
            "search.scheduler.type=none",
            "search.space={training.max_steps: {choice: [2, 5000]}}",
            "search.initial_points=[{training.max_steps: 2}, {training.max_steps: 5000}]",
            "training.eval_interval=2",
        ],
    )
    assert not (cache_dir() / "base_generations").exists()  # the cluster's own, empty node cache
    monkeypatch.setenv(SHARED_ENV, "1")  # both nodes are this host: its disk is their shared storage
    assert not samples_here(cfg)
    # The long trial trains until the sampler has written the base's samples to the node's cache.
    out = run_sweep(cfg, stop=UntilWritten(cache_dir() / "base_generations"))
    assert (out.finished, out.failed) == (2, 0)
    took = {k: v for k, v in out.driver.items() if k.startswith("samples_")}
    assert "samples_load" not in took, took  # the base was held: nothing loaded after the sweep
    assert took["samples_ready_before"] > 0, took  # ready before the sweep ended
    assert not (tmp_path / "prewarm" / "samples.log").exists()  # not made by the driver
    ckpt = Path(out.best["checkpoint"])
    tuned = json.loads((ckpt / "eval" / "generations.json").read_text())
    base = json.loads((ckpt / "eval" / "base_generations.json").read_text())
    shutil.rmtree(cache_dir() / "base_generations")  # the cold sampler generates the base's again
    cold_tuned, cold_base = sample_generations(
        TrialConfig.model_validate(out.best["config"]), ckpt / "adapter"
    )
    assert [r["output"] for r in tuned] == [r["output"] for r in cold_tuned]
    assert [r["output"] for r in base] == [r["output"] for r in cold_base]
    assert tuned[0]["prompt"] == base[0]["prompt"]
