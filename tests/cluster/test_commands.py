"""`qlora-sweep submit` and `jobs` are cluster's: they join the CLI through the `qlora_sweep.commands`
entry point that pyproject.toml declares, so sweep's command line imports nothing of cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from sweep.cli import COMMANDS_GROUP, parser

BIN = Path(sys.executable).parent  # the venv's `qlora-sweep`
CLUSTER = metadata.EntryPoint("cluster", "cluster.cli:add_commands", COMMANDS_GROUP)


def test_cluster_adds_its_commands_to_sweeps_cli(capsys):
    with pytest.raises(SystemExit):
        parser(entry_points=[]).parse_args(["submit", "sweep.yaml"])
    assert "invalid choice: 'submit'" in capsys.readouterr().err  # sweep alone: no cluster commands
    args = parser([CLUSTER]).parse_args(["submit", "sweep.yaml", "--follow", "--set", "lora.r=4"])
    assert (args.config, args.follow, args.sets, args.address) == ("sweep.yaml", True, ["lora.r=4"], None)
    args = parser([CLUSTER]).parse_args(["jobs", "logs", "job-1", "--address", "http://h:8265"])
    assert (args.action, args.job_id, args.address) == ("logs", "job-1", "http://h:8265")
    assert args.fn.__module__ == "cluster.cli"


def test_the_installed_qlora_sweep_has_submit_and_jobs():
    declared = [ep.value for ep in metadata.entry_points(group=COMMANDS_GROUP)]
    assert declared == [CLUSTER.value], "an install older than pyproject.toml: run `pip install -e .` again"
    env = {**os.environ, "COLUMNS": "100"}  # argparse wraps usage lines at the terminal's width
    helps = {
        cmd: subprocess.run(
            [str(BIN / "qlora-sweep"), *cmd.split(), "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        for cmd in ("", "submit", "jobs")
    }
    assert all(out.returncode == 0 for out in helps.values()), {c: o.stderr for c, o in helps.items()}
    assert ",fetch-model,submit,jobs}" in helps[""].stdout
    assert "submit a sweep to a Ray cluster (Job Submission SDK)" in helps[""].stdout
    assert helps["submit"].stdout.startswith(
        "usage: qlora-sweep submit [-h] [--address ADDRESS] [--follow] [--set KEY=VALUE] config\n"
    )
    assert "--set KEY=VALUE" in helps["submit"].stdout and "(default: $RAY_ADDRESS)" in helps["submit"].stdout
    assert helps["jobs"].stdout.startswith(
        "usage: qlora-sweep jobs [-h] [--address ADDRESS] {status,logs,stop} job_id\n"
    )
