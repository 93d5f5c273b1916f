"""A sweep driver SIGKILLed at several points (one of them mid state-write) and resumed ends with
every trial finished exactly once, in Ray's results and in MLflow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

pytestmark = pytest.mark.slow
TOTAL = 6


def _sweep_yaml(tmp_path: Path) -> Path:
    cfg = {
        "name": "killme",
        "storage_path": str(tmp_path / "results"),
        "model": {"path": "tiny"},
        "data": {"eval_rows": 30},
        "training": {
            "max_steps": TOTAL,
            "eval_interval": 2,
            "batch_size": 4,
            "grad_accum": 1,
            "max_seq_len": 256,
        },
        "generation": {"num_prompts": 1, "max_new_tokens": 4},
        "search": {
            "space": {"lora.r": {"choice": [2, 4, 8]}, "training.lr": {"loguniform": [1e-3, 1e-2]}},
            "num_samples": 4,
            "max_concurrent_trials": 1,
            "scheduler": {"type": "none"},
            "seed": 3,
        },
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"register_best": False},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(exp: Path) -> dict[str, list[dict]]:
    """Every trial's reported results, from Ray's own result files."""
    out = {}
    for f in exp.glob("*/result.json"):
        out[f.parent.name] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def _finished(exp: Path) -> int:
    return sum(any(r.get("step") == TOTAL for r in rows) for rows in _rows(exp).values())


def _start(args, log):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", *args], stdout=log, stderr=subprocess.STDOUT, env=env
    )


def _kill_when(proc, condition, deadline_s=900):
    """SIGKILL the driver as soon as `condition()` holds (polled with a deadline, not slept on)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        assert proc.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.2)
    proc.kill()
    pytest.fail("condition for the kill never held")


def test_driver_killed_three_times_then_resumed(tmp_path):
    cfg = _sweep_yaml(tmp_path)
    exp = tmp_path / "results" / "killme"
    log = (tmp_path / "driver.log").open("w")

    # 1. Killed while a trial runs, after the first one finished.
    proc = _start(["run", str(cfg)], log)
    _kill_when(proc, lambda: _finished(exp) >= 1 and len(_rows(exp)) >= 2)
    done_before = {name for name, rows in _rows(exp).items() if any(r.get("step") == TOTAL for r in rows)}

    # 2. Killed again soon after resuming: at the resumed sweep's next report.
    n_reports = sum(len(r) for r in _rows(exp).values())
    proc = _start(["resume", str(exp)], log)
    _kill_when(proc, lambda: sum(len(r) for r in _rows(exp).values()) > n_reports)

    # 3. As if killed mid-write: the newest experiment state and searcher state are cut short.
    for pattern in ("experiment_state-*.json", "searcher-state-*.pkl"):
        newest = max(exp.glob(pattern), key=lambda p: p.stat().st_mtime)
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])

    proc = _start(["resume", str(exp)], log)
    assert proc.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]

    rows = _rows(exp)
    assert len(rows) == 4, sorted(rows)
    for name, results in rows.items():  # each trial finished exactly once
        assert [r["step"] for r in results].count(TOTAL) == 1, (name, [r["step"] for r in results])
    for name in done_before:  # trials finished before the first kill were not run again
        assert [r["step"] for r in rows[name]] == [2, 4, 6]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("killme")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4  # no duplicate child runs across three resumes
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["qlora_sweep.trial_id"] for r in children}) == 4
