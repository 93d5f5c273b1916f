"""The multi-node preflight (`sweep/preflight.py`) against the nodes of a real two-node Ray cluster.

The driver-side call (`run_sweep` -> `check_cluster` with `ray.nodes()`) is exercised end to end in
test_cluster.py (a refused job); here each rule is checked on the real cluster's node resources.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.errors import ConfigError
from sweep.config import load_sweep_config
from sweep.preflight import SHARED_ENV, check_cluster, is_shared_storage, network_mount, spans_nodes

SHARED = {SHARED_ENV: "1"}
SERVER = "http://mlflow.internal:5000"


@pytest.fixture
def no_env_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def nodes(cluster) -> dict[str, list[dict[str, float]]]:
    """Total resources of the cluster's alive nodes, as the dashboard reports them: both, or the head alone."""
    from ray.util.state import list_nodes

    alive = {}
    for n in list_nodes(address=cluster.address, detail=True, raise_on_missing_output=False):
        for name in ("head", "worker"):
            if n.state == "ALIVE" and f"{name}_slot" in n.resources_total:
                alive[name] = dict(n.resources_total)
    assert set(alive) == {"head", "worker"}
    return {"two": [alive["head"], alive["worker"]], "one": [alive["head"]]}


def cfg(tmp_path, *sets):
    return load_sweep_config(None, ["model.path=tiny", f"storage_path={tmp_path / 'results'}", *sets])


@pytest.mark.slow
def test_multi_node_refuses_a_node_local_mlflow_store(tmp_path, nodes, no_env_tracking):
    for uri in (None, "sqlite:///results/mlflow.db", "file:///results/mlruns", "/results/mlruns"):
        sets = [f"tracking.tracking_uri={uri}"] if uri else []  # None: the default sqlite under storage_path
        with pytest.raises(ConfigError) as err:
            check_cluster(cfg(tmp_path, *sets), nodes["two"], SHARED)
        assert err.value.field == "tracking.tracking_uri", uri
        assert "mlflow server" in str(err.value) and "2 alive Ray nodes" in str(err.value)
    for uri in (SERVER, "https://mlflow.example", "databricks", "databricks-uc", "postgresql://db/mlflow"):
        check_cluster(cfg(tmp_path, f"tracking.tracking_uri={uri}"), nodes["two"], SHARED)


@pytest.mark.slow
def test_multi_node_refuses_storage_other_nodes_cannot_see(tmp_path, nodes, no_env_tracking):
    for storage in (str(tmp_path / "results"), f"file://{tmp_path}/results"):
        with pytest.raises(ConfigError) as err:
            check_cluster(
                cfg(tmp_path, f"storage_path={storage}", f"tracking.tracking_uri={SERVER}"), nodes["two"], {}
            )
        assert err.value.field == "storage_path" and err.value.value == storage
        assert "s3://" in err.value.allowed and SHARED_ENV in err.value.allowed
    check_cluster(
        cfg(tmp_path, "storage_path=s3://bucket/sweeps", f"tracking.tracking_uri={SERVER}"), nodes["two"], {}
    )
    check_cluster(cfg(tmp_path, f"tracking.tracking_uri={SERVER}"), nodes["two"], SHARED)  # declared shared


@pytest.mark.slow
def test_one_node_runs_with_local_storage_and_sqlite(tmp_path, nodes, no_env_tracking):
    check_cluster(cfg(tmp_path), nodes["one"], {})  # the single-machine defaults stay valid
    # A head with `num-cpus: 0` runs no trial: they go to workers the autoscaler adds later.
    with pytest.raises(ConfigError) as err:
        check_cluster(cfg(tmp_path), [{**nodes["one"][0], "CPU": 0.0}], {})
    assert err.value.field == "storage_path" and "other than the driver's" in str(err.value)


def test_spans_nodes_and_shared_storage_rules(tmp_path):
    assert not spans_nodes([{"CPU": 2.0}]) and spans_nodes([{"CPU": 2.0}, {"CPU": 1.0}]) and spans_nodes([{}])
    assert is_shared_storage("gs://bucket/x", {}) and is_shared_storage(str(tmp_path), {SHARED_ENV: "true"})
    assert not is_shared_storage(str(tmp_path), {SHARED_ENV: "0"})


def test_network_mounts_count_as_shared(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "overlay / overlay rw 0 0\n"
        "fs-1.efs.aws:/ /mnt/efs nfs4 rw,vers=4.1 0 0\n"
        "bucket /mnt/bucket fuse.gcsfuse rw 0 0\n"
        "/dev/sdb1 /mnt/efs/local-scratch ext4 rw 0 0\n"
    )
    assert network_mount(Path("/mnt/efs/sweeps"), str(mounts))
    assert network_mount(Path("/mnt/bucket/a/b"), str(mounts))
    assert not network_mount(Path("/mnt/efs/local-scratch/x"), str(mounts))  # deepest wins
    assert not network_mount(Path("/home/me/results"), str(mounts))
    assert not network_mount(Path("/x"), str(tmp_path / "no-such-file"))
