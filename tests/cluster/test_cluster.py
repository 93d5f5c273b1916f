"""Cluster mode on a real two-node Ray cluster of this host: `ray job submit`, `qlora-sweep submit`,
`qlora-sweep jobs`, a multi-node setup refused, a node lost mid-sweep."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sweep.preflight import SHARED_ENV
from sweep.tracking_runs import PARENT_TAG, ROLE_TAG

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's `ray` and `qlora-sweep`
JOB_DEADLINE_S = 900


def write_sweep(
    path: Path,
    name: str,
    storage: Path,
    *,
    trials: int,
    steps: int = 8,
    tracking: str | None = None,
    concurrent: int = 2,
) -> Path:
    """A tiny sweep: the built-in tiny model, a few steps, one generated prompt, one CPU per trial."""
    data = {
        "name": name,
        "storage_path": str(storage),
        "max_failures": 1,
        "model": {"path": "tiny"},
        "data": {"eval_rows": 30},
        "training": {
            "max_steps": steps,
            "eval_interval": 2,
            "batch_size": 4,
            "grad_accum": 1,
            "max_seq_len": 256,
        },
        "generation": {"num_prompts": 1, "max_new_tokens": 4},
        "search": {
            "space": {"lora.r": {"choice": [2, 4, 8, 16]}},  # >= trials: no config is trained twice
            "num_samples": trials,
            "max_concurrent_trials": concurrent,
            "scheduler": {"type": "none"},
        },
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"register_best": False, **({"tracking_uri": tracking} if tracking else {})},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def jobs_client(cluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.address)


def wait_job(cluster, job_id: str, deadline_s: float = JOB_DEADLINE_S, until: tuple[str, ...] = ()) -> str:
    """Poll the job's status until it is terminal (or one of `until`); fail with its logs at the deadline."""
    client, deadline = jobs_client(cluster), time.monotonic() + deadline_s
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal() or str(status) in until:
            return str(status)
        if time.monotonic() > deadline:
            pytest.fail(
                f"job {job_id} still {status} after {deadline_s}s:\n{client.get_job_logs(job_id)[-4000:]}"
            )
        time.sleep(0.5)  # polling interval of the status probe, bounded by the deadline


def trial_rows(experiment: Path) -> dict[str, list[dict]]:
    """Every report of every trial, as Tune wrote them to the shared storage (result.json lines)."""
    return {
        f.parent.name: [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        for f in sorted(experiment.glob("run_tune_trial_*/result.json"))
    }


def reported_from(experiment: Path, node_id: str) -> bool:
    """Whether any trial's result.json in storage holds a row from the node. Tune's driver rewrites
    these files after every step, so a read may catch one cut short: its text is searched, not parsed."""
    return any(
        f'"node_id": "{node_id}"' in f.read_text() for f in experiment.glob("run_tune_trial_*/result.json")
    )


def built(cache_dir: Path) -> list[str]:
    """Entries built into a node's cache dir (not the lock files beside them)."""
    return (
        sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))
        if cache_dir.is_dir()
        else []
    )


def mlflow_runs(url: str, name: str):
    """The sweep's parent run and its child runs on the MLflow server; no other run in the experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no MLflow experiment {name} on {url}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    assert len(runs) == 1 + len(children)
    return parents[0], children


def assert_all_tracked(url: str, name: str, trials: int) -> None:
    parent, children = mlflow_runs(url, name)
    assert len(children) == trials
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED"] * trials  # none left RUNNING, none FAILED


def code_copy(dest: Path) -> Path:
    """A temporary copy of the project's packages: the job runs the code it was shipped with."""
    for pkg in ("sweep", "trainables", "evaluation", "cluster"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest)
    return dest


def run_cli(cluster, *args: str, cwd: Path | None = None, timeout: float = JOB_DEADLINE_S + 60, **env: str):
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=cluster.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, proc.stdout + proc.stderr


def submit(cluster, wd: Path, *args: str, **kwargs):
    """`qlora-sweep submit sweep.yaml --address <the cluster> ARGS`, run in the sweep's directory `wd`."""
    return run_cli(
        cluster, "qlora-sweep", "submit", "sweep.yaml", "--address", cluster.address, *args, cwd=wd, **kwargs
    )


def jobs(cluster, action: str, job_id: str):
    """`qlora-sweep jobs ACTION JOB_ID --address <the cluster>`."""
    return run_cli(cluster, "qlora-sweep", "jobs", action, job_id, "--address", cluster.address)


@pytest.mark.slow
def test_ray_job_submit_spreads_trials_prepares_once_per_node_and_tracks_every_run(
    cluster, mlflow_server, tmp_path
):
    wd = code_copy(tmp_path / "wd")
    storage = tmp_path / "shared"
    write_sweep(wd / "sweep.yaml", "cli", storage, trials=4, tracking=mlflow_server)
    job_id = f"cli-{uuid.uuid4().hex[:8]}"
    env_json = json.dumps({"env_vars": {SHARED_ENV: "1"}})  # this host's storage is "shared" by both nodes
    proc, out = run_cli(
        cluster,
        "ray",
        "job",
        "submit",
        "--address",
        cluster.address,
        "--submission-id",
        job_id,
        "--working-dir",
        str(wd),
        "--runtime-env-json",
        env_json,
        "--no-wait",
        "--",
        "qlora-sweep",
        "run",
        "sweep.yaml",
        timeout=120,
    )
    assert proc.returncode == 0, out[-3000:]
    assert wait_job(cluster, job_id) == "SUCCEEDED", jobs_client(cluster).get_job_logs(job_id)[-4000:]

    rows = trial_rows(storage / "cli")
    assert len(rows) == 4 and all(r[-1]["done"] and r[-1]["step"] == 8 for r in rows.values())
    per_node = Counter(r[-1]["node_id"] for r in rows.values())
    head, worker = cluster.nodes["head"], cluster.nodes["worker"]
    assert set(per_node) == {head.node_id, worker.node_id}, per_node  # placed by their CPU requests on both
    assert max(per_node.values()) >= 2  # so one node served several trials...
    for node in (head, worker):  # ...yet each node converted the model and tokenized the data once
        assert len(built(node.cache / "models")) == 1, built(node.cache / "models")
        assert [n.rsplit("-", 1)[1] for n in built(node.cache / "tokenized")] == ["eval", "train"]
    assert_all_tracked(mlflow_server, "cli", 4)


@pytest.mark.slow
def test_qlora_sweep_submit_follows_to_success_and_jobs_reports(cluster, mlflow_server, tmp_path):
    storage = tmp_path / "shared"
    write_sweep(
        tmp_path / "wd" / "sweep.yaml", "sdk", storage, trials=2
    )  # tracking URI: from the environment
    proc, out = submit(
        cluster,
        tmp_path / "wd",
        "--follow",
        "--set",
        "search.seed=3",
        MLFLOW_TRACKING_URI=mlflow_server,
        **{SHARED_ENV: "1"},
    )
    assert proc.returncode == 0, out[-4000:]
    job_id = proc.stdout.splitlines()[0]
    assert job_id.startswith("sdk-")
    assert "=== sweep sdk: 2 finished" in proc.stdout  # the followed logs, to the driver's summary
    assert proc.stdout.rstrip().endswith(f"job {job_id}: SUCCEEDED")
    info = jobs_client(cluster).get_job_info(job_id)
    assert info.entrypoint == "python -m sweep.cli run sweep.yaml --set search.seed=3"
    assert info.runtime_env["env_vars"] == {
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_TRACKING_URI": mlflow_server,
        SHARED_ENV: "1",
        "HF_HUB_OFFLINE": "1",
    }

    rows = trial_rows(storage / "sdk")
    head, worker = cluster.nodes["head"], cluster.nodes["worker"]
    # On the cluster's nodes; not necessarily both: a trial may take the worker (and the loaded base) of
    # one that finished before its own worker had started (Tune's reuse_actors). Spreading over the
    # nodes is shown by test_ray_job_submit_spreads_trials_prepares_once_per_node_and_tracks_every_run.
    assert {r[-1]["node_id"] for r in rows.values()} <= {head.node_id, worker.node_id}
    assert_all_tracked(mlflow_server, "sdk", 2)

    status, out = jobs(cluster, "status", job_id)
    assert status.returncode == 0 and f"{job_id}: SUCCEEDED" in status.stdout, out
    logs, out = jobs(cluster, "logs", job_id)
    assert "=== sweep sdk: 2 finished" in logs.stdout, out[-2000:]


@pytest.mark.slow
def test_multi_node_sweep_on_unshared_storage_is_refused_before_it_starts(cluster, mlflow_server, tmp_path):
    storage = tmp_path / "local"
    write_sweep(tmp_path / "wd" / "sweep.yaml", "refused", storage, trials=2, tracking=mlflow_server)
    proc, out = submit(cluster, tmp_path / "wd", "--follow")
    assert proc.returncode == 1, out[-3000:]
    assert f"storage_path: got '{storage}'" in out and f"{SHARED_ENV}=1" in out and "alive Ray nodes" in out
    assert not list(storage.glob("refused/run_tune_trial_*"))  # no trial started
    from mlflow import MlflowClient

    assert MlflowClient(mlflow_server).get_experiment_by_name("refused") is None  # nor any run


@pytest.mark.slow
def test_jobs_stop_and_unknown_job(cluster):
    job_id = jobs_client(cluster).submit_job(
        entrypoint="sleep 300", submission_id=f"sleep-{uuid.uuid4().hex[:8]}"
    )
    assert wait_job(cluster, job_id, 60, until=("RUNNING",)) == "RUNNING"
    proc, out = jobs(cluster, "stop", job_id)
    assert proc.returncode == 0 and "stop requested" in proc.stdout, out
    assert wait_job(cluster, job_id, 60) == "STOPPED"
    proc, out = jobs(cluster, "status", "no-such-job")
    assert proc.returncode == 2 and "JOB_ID: got 'no-such-job'" in proc.stderr, out


@pytest.mark.slow
def test_node_lost_mid_sweep_its_trial_resumes_elsewhere_from_its_checkpoint(
    cluster, mlflow_server, tmp_path, tiny_model_dir
):
    victim = cluster.start_node("victim", seed_models=tiny_model_dir)
    storage = tmp_path / "shared"
    write_sweep(
        tmp_path / "wd" / "sweep.yaml",
        "nodeloss",
        storage,
        trials=3,
        steps=40,
        concurrent=3,
        tracking=mlflow_server,
    )
    proc, out = submit(cluster, tmp_path / "wd", timeout=120, **{SHARED_ENV: "1"})
    assert proc.returncode == 0, out[-3000:]
    job_id = proc.stdout.splitlines()[0]

    # One CPU per node and three trials at once: one trial runs on the victim. Kill the node (every
    # process of it, at once) right after that trial's first report, which carried a checkpoint.
    client, deadline = jobs_client(cluster), time.monotonic() + JOB_DEADLINE_S
    while not reported_from(storage / "nodeloss", victim.node_id):
        if client.get_job_status(job_id).is_terminal() or time.monotonic() > deadline:
            pytest.fail(f"no trial reported from the victim node:\n{client.get_job_logs(job_id)[-4000:]}")
        time.sleep(0.2)  # polling interval of the result probe, bounded by the deadline
    cluster.kill("victim")

    assert wait_job(cluster, job_id) == "SUCCEEDED", client.get_job_logs(job_id)[-4000:]
    rows = trial_rows(storage / "nodeloss")
    names = {node.node_id: name for name, node in cluster.nodes.items()}

    def evidence() -> str:
        """Every trial's rows as node@step, and the end of the job's log: what a failure here needs."""
        seen = (
            f"{t}: " + " ".join(f"{names.get(r['node_id'], '?')}@{r['step']}" for r in rs)
            for t, rs in rows.items()
        )
        return "\n".join(seen) + "\n" + client.get_job_logs(job_id)[-3000:]

    assert len(rows) == 3 and all(r[-1]["done"] and r[-1]["step"] == 40 for r in rows.values()), evidence()
    moved = [r for r in rows.values() if r[0]["node_id"] == victim.node_id]
    assert len(moved) == 1, evidence()  # Tune kept its rows from before the restart (sweep/tune_logs.py)
    steps = [r["step"] for r in moved[0]]
    assert moved[0][-1]["node_id"] != victim.node_id, evidence()  # finished on a surviving node
    assert steps == sorted(set(steps)), evidence()  # went on from its checkpoint: no step trained twice
    assert_all_tracked(mlflow_server, "nodeloss", 3)
