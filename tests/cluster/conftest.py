"""A real two-node Ray cluster on this host, and a real `mlflow server`, for the cluster tests.

Each node is its own `ray start --block` process with its own `--temp-dir` (two nodes of one host
sharing a temp dir share `runtime_resources/`, and one node's cleanup deletes the other's unpacked
working_dir) and its own QLORA_SWEEP_CACHE, as two machines would have. Ray binds its node services
to the host's own interface address (it replaces 127.0.0.1 with it); the dashboard and MLflow
listen on 127.0.0.1 only. Other engineers run Ray on this host too: nothing here calls `ray stop`;
teardown kills the process trees this fixture started, then any process still naming its root dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from helpers import free_port

from cluster.runtime_env import EXTRA_ENV, PASS_ENV, TEMPLATE_ENV

BIN = Path(sys.executable).parent  # the venv's `ray`, `qlora-sweep` and `python`
START_DEADLINE_S = 300
# Not inherited from the pytest process: its Ray address, its cache, and whatever a submission
# would pass on (the tests set exactly what they mean to pass).
UNSET = {
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "QLORA_SWEEP_CACHE",
    "TORCHINDUCTOR_CACHE_DIR",  # each node's own, under its own cache (trainables/__init__.py)
    EXTRA_ENV,
    TEMPLATE_ENV,
    *PASS_ENV,
}


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it: a node lost at once, as in a preemption."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=15)


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    cache: Path
    log: Path
    node_id: str = ""


@dataclass
class LocalCluster:
    root: Path
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of our cluster processes and submitters: no token auth, no usage stats,
        the venv first on PATH (the job's `python` and `qlora-sweep`), no inherited Ray address or cache."""
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        env.update(
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
            PATH=f"{BIN}{os.pathsep}{env['PATH']}",
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        env.update(extra)
        return env

    def start_node(self, name: str, seed_models: Path | None = None) -> Node:
        """`ray start --block` with one CPU and the resource `<name>_slot`; ready once the dashboard lists it."""
        cache = self.root / f"cache-{name}"
        cache.mkdir()
        if seed_models is not None:  # a node whose cache is already warm (built-in models converted)
            shutil.copytree(seed_models, cache / "models" / seed_models.name)
        head = not self.nodes
        cmd = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--num-cpus",
            "1",
            "--resources",
            f'{{"{name}_slot": 1}}',
            "--temp-dir",
            str(self.root / f"ray-{name}"),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--object-store-memory",
            str(200 * 2**20),
        ]
        if head:
            cmd += [
                "--head",
                "--port",
                str(self.gcs_port),
                "--node-ip-address",
                "127.0.0.1",
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(self.dashboard_port),
                "--ray-client-server-port",
                str(free_port()),
            ]
        else:
            cmd += ["--address", f"127.0.0.1:{self.gcs_port}"]
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(QLORA_SWEEP_CACHE=str(cache)),
                start_new_session=True,
            )
        node = self.nodes[name] = Node(name, proc, cache, log)
        node.node_id = self._wait_for_node(node)
        return node

    def _wait_for_node(self, node: Node) -> str:
        from ray.util.state import list_nodes

        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                for n in list_nodes(address=self.address, detail=True, raise_on_missing_output=False):
                    if n.state == "ALIVE" and f"{node.name}_slot" in n.resources_total:
                        return n.node_id
            except Exception:  # noqa: BLE001 - the dashboard is not up yet
                pass
            if node.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray node {node.name} did not join: {node.log.read_text()[-3000:]}")
            time.sleep(0.5)  # polling interval of the readiness probe, bounded by the deadline

    def kill(self, name: str) -> None:
        kill_tree(self.nodes[name].proc.pid)

    def teardown(self) -> None:
        for node in reversed(list(self.nodes.values())):
            kill_tree(node.proc.pid)
        marker = str(self.root)  # stragglers re-parented to init still name our temp dirs
        for p in psutil.process_iter(["pid", "cmdline"]):
            if p.pid != os.getpid() and marker in " ".join(p.info["cmdline"] or []):
                kill_tree(p.pid)


@pytest.fixture(scope="module")  # gone before other test modules start Ray (Ray Train needs one instance)
def mlflow_server(start_mlflow_server):
    """A real `mlflow server` on a free 127.0.0.1 port, ready when /health answers."""
    root = Path(tempfile.mkdtemp(prefix="qlora-cluster-mlflow-"))
    try:
        with start_mlflow_server(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """Head (`head_slot`) + worker (`worker_slot`), one CPU each; torn down even when a test fails."""
    c = LocalCluster(Path(tempfile.mkdtemp(prefix="qlora-cluster-", dir="/tmp")))
    try:
        c.start_node("head")
        c.start_node("worker")
        yield c
    finally:
        c.teardown()
        shutil.rmtree(c.root, ignore_errors=True)
