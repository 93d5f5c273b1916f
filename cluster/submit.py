"""`qlora-sweep submit` and `qlora-sweep jobs`: a sweep as a Ray job, through Ray's Job Submission SDK.

Nothing home-made sits between the user and Ray: the job is `python -m sweep.cli run SWEEP.yaml`
with the sweep's working_dir uploaded, exactly what `ray job submit --working-dir . -- qlora-sweep
run sweep.yaml` does, plus the pass-through variables of `cluster/runtime_env.py`. The config is
validated here first, so a typo fails on the submitter's machine in milliseconds; whether the
cluster suits it (shared storage, an MLflow server) is checked by the driver once it sees the
cluster (`sweep/preflight.py`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from cluster.runtime_env import TEMPLATE_ENV, build_runtime_env, load_template
from evaluation.errors import ConfigError
from sweep.config import SweepConfig, load_sweep_config

ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")  # the order `ray job` reads them in
SETTLE_S = 60  # after the log stream ends, how long to wait for the job to report a final status


def client_for(address: str | None):
    """A JobSubmissionClient for the dashboard at `address` (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS)."""
    from ray.job_submission import JobSubmissionClient

    address = address or next((os.environ[n] for n in ADDRESS_ENVS if os.environ.get(n)), None)
    if not address:
        raise ConfigError(
            "--address", None, "the Ray dashboard URL, e.g. http://HEAD:8265 (or set RAY_ADDRESS)"
        )
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(
            "--address",
            address,
            "the dashboard URL of a running Ray cluster, e.g. http://HEAD:8265",
            str(err).strip().splitlines()[0][:200],
        ) from None


def check_submittable(cfg: SweepConfig) -> None:
    """A relative storage_path would resolve inside the job's copy of the working_dir, which Ray deletes."""
    path = cfg.storage_path
    if "://" not in path and not Path(path).expanduser().is_absolute():
        raise ConfigError(
            "storage_path",
            path,
            "an absolute path on the cluster (shared by its nodes) or a URI "
            "(s3://BUCKET/PATH, gs://BUCKET/PATH)",
            "a relative path lands in the job's temporary working_dir copy and is lost",
        )


def entrypoint(config_in_working_dir: str, sets: list[str]) -> str:
    """The job's command: the same `run` a user types, with the same overrides."""
    args = ["python", "-m", "sweep.cli", "run", config_in_working_dir]
    for s in sets:
        args += ["--set", s]
    return shlex.join(args)


def _relative_config(config_path: str, working_dir: str) -> str:
    if "://" in working_dir:
        return config_path  # a packaged working_dir: the path is the user's to get right
    path = Path(config_path).expanduser().resolve()
    try:
        return path.relative_to(working_dir).as_posix()
    except ValueError:
        raise ConfigError(
            "config",
            config_path,
            f"a file inside the working_dir {working_dir}",
            f"run from the directory that holds it, or set working_dir in ${TEMPLATE_ENV}'s file",
        ) from None


def submit(
    config_path: str,
    sets: list[str] | None = None,
    address: str | None = None,
    follow: bool = False,
    *,
    runtime_env: str | None = None,
    working_dir: str | None = None,
) -> int:
    """Submit the sweep as a Ray job and print its id; with `follow`, stream its logs to the end.

    Returns 0 when submitted (or, following, when the job SUCCEEDED), 1 when a followed job did not."""
    sets = list(sets or [])
    cfg = load_sweep_config(config_path, sets)
    check_submittable(cfg)
    env = build_runtime_env(load_template(runtime_env), working_dir)
    command = entrypoint(_relative_config(config_path, env["working_dir"]), sets)
    client = client_for(address)
    job_id = client.submit_job(
        entrypoint=command,
        runtime_env=env,
        submission_id=f"{cfg.name}-{secrets.token_hex(4)}",
        metadata={"qlora_sweep.name": cfg.name},
    )
    print(job_id, flush=True)
    if not follow:
        print(f"follow it with: qlora-sweep jobs logs {job_id}   (status, stop likewise)", file=sys.stderr)
        return 0
    return follow_job(client, job_id)


def follow_job(client, job_id: str) -> int:
    """Print the job's logs as they come, then its final status; 0 if it SUCCEEDED."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on: qlora-sweep jobs stop {job_id}", file=sys.stderr)
        return 130
    status = wait_until_done(client, job_id, SETTLE_S)
    print(f"job {job_id}: {status}", flush=True)
    return 0 if str(status) == "SUCCEEDED" else 1


def wait_until_done(client, job_id: str, timeout_s: float):
    """The job's status once terminal, or its current status when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)  # polling interval of the status probe, bounded by the deadline
        status = client.get_job_status(job_id)
    return status


def jobs(action: str, job_id: str, address: str | None = None) -> int:
    """`status`: print the status (and Ray's message); `logs`: print the logs so far; `stop`: stop it."""
    client = client_for(address)
    try:
        if action == "status":
            info = client.get_job_info(job_id)
            print(f"{job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
        elif action == "logs":
            sys.stdout.write(client.get_job_logs(job_id))
        elif action == "stop":
            stopped = client.stop_job(job_id)
            print(f"{job_id}: {'stop requested' if stopped else 'already finished'}")
        else:
            raise ConfigError("action", action, "status, logs or stop")
    except RuntimeError as err:
        if "does not exist" in str(err) or "404" in str(err):
            raise ConfigError(
                "JOB_ID", job_id, "the id of a job on this cluster (`ray job list` shows them)"
            ) from None
        raise
    return 0
