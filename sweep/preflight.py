"""Refuse, before a sweep starts, a setup that cannot work once trials run on more than one node.

Trials write checkpoints to `storage_path` from whichever node they run on, and Tune retries a
trial of a lost node elsewhere from its last checkpoint: so every node, and the driver, must see
the same `storage_path`. A local directory is a different directory on every node unless it is a
network mount. Likewise the MLflow store: a sqlite file or a local `mlruns` directory lives on the
disk of the node that runs the driver (in a KubeRay `RayJob`, a pod deleted with the cluster) and
sqlite must not sit on NFS, so a multi-node sweep needs an MLflow server or a database.

A local `storage_path` counts as shared when it is on a network filesystem (NFS, Lustre, a FUSE
bucket mount, ... as /proc/mounts says) or when the user declares it with
`QLORA_SWEEP_SHARED_STORAGE=1` (for mounts this node cannot tell apart from local disks).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from evaluation.errors import ConfigError
from sweep.config import SweepConfig

SHARED_ENV = "QLORA_SWEEP_SHARED_STORAGE"
NETWORK_FS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "lustre",
    "gpfs",
    "beegfs",
    "glusterfs",
    "ceph",
    "afs",
    "panfs",
    "wekafs",
    "efs",
}
SERVER_SCHEMES = (
    "http(s)://HOST:PORT of an `mlflow server`, databricks, or a database (postgresql://, mysql://)"
)


def alive_node_resources() -> list[dict[str, float]]:
    """Total resources of each alive node of the connected Ray cluster."""
    import ray

    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


def spans_nodes(nodes: list[dict[str, float]]) -> bool:
    """More than one node, or a lone head with `num-cpus: 0` (the KubeRay convention): it runs no trial
    itself, so the autoscaler's workers will, once they join."""
    return len(nodes) > 1 or (len(nodes) == 1 and nodes[0].get("CPU", 0.0) == 0)


def is_shared_storage(storage: str, environ: dict[str, str] | None = None) -> bool:
    """A cloud URI (s3://, gs://, ...), a path on a network mount, or one the user declared shared."""
    environ = os.environ if environ is None else environ
    if "://" in storage and not storage.startswith("file://"):
        return True
    if environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return network_mount(Path(storage.removeprefix("file://")))


def network_mount(path: Path, mounts: str = "/proc/mounts") -> bool:
    """Whether the longest mount point above `path` is a network or FUSE filesystem (Linux)."""
    try:
        table = Path(mounts).read_text().splitlines()
    except OSError:
        return False
    path = path.expanduser().resolve()
    best, best_type = "", ""
    for line in table:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (path == Path(point) or Path(point) in path.parents) and len(point) >= len(best):
            best, best_type = point, parts[2]
    return best_type in NETWORK_FS or best_type.startswith(("fuse.", "nfs"))


def is_local_store(uri: str) -> bool:
    """sqlite, file:// and bare paths keep MLflow's runs on one node's disk."""
    if uri in ("databricks", "databricks-uc", "uc"):  # MLflow's bare names of hosted stores
        return False
    scheme = urlparse(uri).scheme.lower()
    return scheme in ("", "file", "sqlite") or len(scheme) == 1  # a one-letter scheme is a Windows drive


def check_cluster(
    cfg: SweepConfig, nodes: list[dict[str, float]] | None = None, environ: dict[str, str] | None = None
) -> None:
    """Raise ConfigError when the sweep spans nodes but its storage or MLflow store is node-local.

    `nodes`: total resources of each alive node (default: the connected Ray cluster's)."""
    nodes = alive_node_resources() if nodes is None else nodes
    if not spans_nodes(nodes):
        return
    where = (
        f"{len(nodes)} alive Ray nodes" if len(nodes) > 1 else "trials run on nodes other than the driver's"
    )
    if not is_shared_storage(cfg.storage(), environ):
        raise ConfigError(
            "storage_path",
            cfg.storage_path,
            "a cloud URI (s3://BUCKET/PATH, gs://BUCKET/PATH) or a directory every node mounts at the same path "
            f"(NFS, EFS, Lustre; declare a mount this node does not see as such with {SHARED_ENV}=1)",
            f"{where}: checkpoints written on one node must be readable on the others to retry a trial elsewhere",
        )
    uri = cfg.tracking_uri()
    if is_local_store(uri):
        raise ConfigError(
            "tracking.tracking_uri",
            uri,
            SERVER_SCHEMES,
            f"{where}: a sqlite or file store lives on one node's disk; run `mlflow server` and set "
            "tracking.tracking_uri or MLFLOW_TRACKING_URI",
        )
