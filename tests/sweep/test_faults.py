"""Trial faults in real Ray Tune sweeps of the tiny model.

- A trial's worker process SIGKILLed mid-training is retried (max_failures=1) from its last
  checkpoint and resumes at its saved step.
- Out of memory retries once with half the micro-batch and twice the accumulation, then fails that
  trial alone with the reason recorded. There is no GPU here, so the OOM is injected: into the real
  training loop for the in-process tests, and at the trial function for the sweep.
- A full disk (a real 16 KiB tmpfs as the trial's checkpoint staging dir) fails the trial with a
  clear reason. (At most keep_checkpoints + 1 checkpoints per trial is asserted in test_runner.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import ray
import torch
from ray.cloudpickle import register_pickle_by_value
from ray.tune import ExperimentAnalysis

import sweep.tune_reporter as tune_reporter
import trainables.trial as trial_mod
from sweep.config import load_sweep_config
from sweep.runner import run_sweep
from sweep.tracking import FAILURE_TAG, child_runs, client_for
from trainables.config import load_trial_config
from trainables.reporting import PrintReporter

register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules by name

OOM_SEED, DISK_SEED = 4001, 4002  # training.seed values marking the trials a fault is injected into
FULL_DISK_ENV = "QLORA_TEST_FULL_DISK"
BASE = [
    "model.path=tiny",
    "data.eval_rows=30",
    "training.eval_interval=2",
    "training.batch_size=4",
    "training.grad_accum=1",
    "training.max_seq_len=256",
    "training.eval_batches=2",
    "generation.num_prompts=1",
    "generation.max_new_tokens=4",
    "resources.cpu=1",
    "resources.gpu=0",
    "search.scheduler.type=none",
]


def _inject_faults() -> None:
    """Ray's worker_process_setup_hook: runs in every worker process of this module's Ray instance.

    Trials marked by their seed meet a fault; every other trial runs the real code unchanged.
    """
    import tempfile

    import sweep.tune_reporter as reporter_mod

    real = reporter_mod.run_trial

    def run_trial(cfg, reporter=None):
        if cfg.training.seed == OOM_SEED:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (injected at batch_size={cfg.training.batch_size})"
            )
        if cfg.training.seed == DISK_SEED:
            tempfile.tempdir = os.environ[FULL_DISK_ENV]  # TuneReporter stages checkpoints via mkdtemp()
        return real(cfg, reporter)

    reporter_mod.run_trial = run_trial


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory) -> Path | None:
    """A real 16 KiB tmpfs (None where mounting is not permitted)."""
    where = tmp_path_factory.mktemp("full-disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)], capture_output=True, text=True
    )
    yield where if done.returncode == 0 else None
    if done.returncode == 0:
        subprocess.run(["umount", str(where)], check=False)


@pytest.fixture(scope="module")
def local_ray(full_disk):
    env = {FULL_DISK_ENV: str(full_disk or "")}
    # Three logical CPUs: the sweep's three trials (and their retries) start side by side.
    ray.init(
        num_cpus=3,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": _inject_faults, "env_vars": env},
    )
    yield
    ray.shutdown()


KILL_SEED, STEPS = 42, 4


def _rows(exp: Path) -> dict[int, list[dict]]:
    """Each trial's result rows (by its training.seed), from Ray's own result files."""
    out: dict[int, list[dict]] = {}
    for path in exp.glob("*/result.json"):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line being written
                continue
            out.setdefault(row["config"]["training.seed"], []).append(row)
    return out


def _kill_worker_after_first_report(exp: Path, done: threading.Event, killed: dict) -> None:
    """SIGKILL the KILL_SEED trial's worker process (Ray's `pid` in its first result row) at once.

    Polls until the sweep ends (`done`), with no deadline of its own: on a loaded machine the first
    report came after 437 s and a 300 s deadline silently skipped the kill."""
    while not done.is_set():
        rows = _rows(exp).get(KILL_SEED)
        if rows:
            proc = psutil.Process(rows[-1]["pid"])
            killed.update(pid=proc.pid, step=rows[-1]["step"], cmdline=" ".join(proc.cmdline()))
            if "ImplicitFunc" in killed["cmdline"]:  # only ever a Ray trial actor of this sweep
                proc.send_signal(signal.SIGKILL)
            return
        done.wait(0.05)


@pytest.fixture(scope="module")
def faulty_sweep(local_ray, full_disk, tmp_path_factory):
    """One sweep, max_failures=1: a trial whose worker is SIGKILLed after its first report, a trial
    out of memory at every batch size, and (with the tmpfs) a trial whose disk is full."""
    seeds = [KILL_SEED, OOM_SEED] + ([DISK_SEED] if full_disk else [])
    points = ", ".join(f"{{training.seed: {s}}}" for s in seeds)
    cfg = load_sweep_config(
        None,
        [
            *BASE,
            f"storage_path={tmp_path_factory.mktemp('faults')}",
            "name=faults",
            "max_failures=1",
            f"training.max_steps={STEPS}",
            f"search.num_samples={len(seeds)}",
            f"search.max_concurrent_trials={len(seeds)}",
            f"search.space={{training.seed: {{choice: {seeds}}}}}",
            f"search.initial_points=[{points}]",
        ],
    )
    exp = Path(cfg.storage()) / cfg.name
    done, killed = threading.Event(), {}
    killer = threading.Thread(target=_kill_worker_after_first_report, args=(exp, done, killed), daemon=True)
    killer.start()
    try:
        out = run_sweep(cfg)
    finally:
        done.set()
        killer.join()
    trials = {t.config["training.seed"]: t for t in ExperimentAnalysis(out.experiment_path).trials}
    runs = {
        int(r.data.params["training.seed"]): r
        for r in child_runs(client_for(cfg.tracking_uri()), out.parent_run_id)
    }
    return {"out": out, "rows": _rows(exp), "killed": killed, "trials": trials, "runs": runs}


def test_killed_worker_resumes_from_its_checkpoint(faulty_sweep):
    killed = faulty_sweep["killed"]
    assert "ImplicitFunc" in killed.get("cmdline", ""), killed
    rows = faulty_sweep["rows"][KILL_SEED]
    before = [r for r in rows if r["pid"] == killed["pid"]]
    after = [r for r in rows if r["pid"] != killed["pid"]]
    assert before and after, f"no retry after the kill: {killed}, {[(r['step'], r['pid']) for r in rows]}"
    assert killed["step"] < STEPS  # killed mid-training
    # The retry continues from the checkpoint of the last step reported before the kill, so every step
    # is reported exactly once (a restart from 0 would report step 2 again).
    assert after[0]["step"] == before[-1]["step"] + 2 > 2
    assert [r["step"] for r in rows] == list(range(2, STEPS + 1, 2))
    assert after[0]["iterations_since_restore"] == 1  # Ray restored the trial, not a fresh one
    assert after[-1]["done"] and after[-1]["step"] == STEPS
    trial = faulty_sweep["trials"][KILL_SEED]
    assert trial.status == "TERMINATED" and trial.run_metadata.num_failures == 1
    assert faulty_sweep["out"].best["metrics"]["step"] == STEPS
    # MLflow keeps one run for the trial, finished, with the retry's reason.
    run = faulty_sweep["runs"][KILL_SEED]
    assert run.info.status == "FINISHED" and FAILURE_TAG not in run.data.tags
    assert "died" in run.data.tags["qlora_sweep.last_retry_reason"].lower(), run.data.tags


# ---------------------------------------------------------------- out of memory


@pytest.fixture
def oom_trial(tiny_model_dir, tmp_path, monkeypatch):
    """A real in-process trial whose training micro-batches of more than `fits` rows raise OOM, as a
    GPU would at the larger size; returns (run, trial-function calls, micro-batch sizes)."""
    calls, sizes, fits = [], [], {"rows": 2}
    real_loss, real_trial = trial_mod.response_loss_sum, tune_reporter.run_trial

    def loss(model, batch):
        sizes.append(batch["input_ids"].shape[0])
        if sizes[-1] > fits["rows"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real_loss(model, batch)

    def trial(cfg, reporter=None):
        calls.append((cfg.training.batch_size, cfg.training.grad_accum))
        return real_trial(cfg, reporter)

    monkeypatch.setattr(trial_mod, "response_loss_sum", loss)
    monkeypatch.setattr(tune_reporter, "run_trial", trial)
    cfg = load_trial_config(
        None,
        [s for s in BASE if not s.startswith(("resources", "search"))]
        + ["training.max_steps=2", "training.grad_accum=2", "generation.num_prompts=0"],
    )

    def run():
        return tune_reporter.run_with_retries(
            cfg, PrintReporter(tmp_path / "out", resume=False, echo=lambda _: None)
        )

    return run, calls, sizes, fits


def test_oom_retries_once_with_half_the_micro_batch(oom_trial):
    run, calls, sizes, _ = oom_trial
    final = run()
    assert calls == [(4, 2), (2, 4)]  # half the rows per micro-batch, twice the micro-batches: 8 rows a step
    retry = sizes[1:]
    assert max(retry) <= 2 and len(retry) == 2 * 4  # 2 steps x 4 micro-batches
    assert final["step"] == final["total_steps"] == 2 and final["done"]


def test_the_retry_halves_the_micro_batch_the_plan_ran_not_the_configured_one(monkeypatch):
    """On a GPU the run plan may regroup 4 x 4 into 16 x 1 (trainables/run_plan.py): when 16 rows run out
    of memory the retry runs at most 8, not 2 (half the configured 4), so a trial that fitted before the
    regrouping still fits. The OOM is raised as the plan's trial raises it (no GPU here)."""
    calls = []

    def trial(cfg, reporter=None):
        calls.append((cfg.training.batch_size, cfg.training.grad_accum))
        if len(calls) == 1:
            err = torch.OutOfMemoryError("at 16 rows x 1 micro-batches: CUDA out of memory (injected)")
            err.micro_batch = 16
            raise err
        return {"done": True}

    monkeypatch.setattr(tune_reporter, "run_trial", trial)
    cfg = load_trial_config(None, ["model.path=tiny", "training.batch_size=4", "training.grad_accum=4"])
    assert tune_reporter.run_with_retries(cfg, None) == {"done": True}
    assert calls == [(4, 4), (8, 2)]  # the same 16 rows a step


def test_oom_again_fails_the_trial_naming_both_sizes(oom_trial):
    run, calls, _, fits = oom_trial
    fits["rows"] = 0  # nothing fits
    with pytest.raises(RuntimeError, match=r"out of memory at a micro-batch of 4 rows and again at 2") as err:
        run()
    # The error names what ran: the plan's grouping of the step's rows.
    assert "at 2 rows x 4 micro-batches: CUDA out of memory" in str(err.value)
    assert calls == [(4, 2), (2, 4)]


def test_oom_fails_that_trial_alone_with_the_reason_recorded(faulty_sweep):
    out, trial, run = faulty_sweep["out"], faulty_sweep["trials"][OOM_SEED], faulty_sweep["runs"][OOM_SEED]
    assert out.finished == 1  # the killed-and-resumed trial, undisturbed
    assert trial.status == "ERROR"
    reason = out.errors[Path(trial.path).name]
    assert "out of memory at a micro-batch of 4 rows and again at 2" in reason, reason
    assert run.info.status == "FAILED"
    assert "out of memory at a micro-batch of 4 rows and again at 2" in run.data.tags[FAILURE_TAG]


# ---------------------------------------------------------------- disk


def test_full_disk_fails_the_trial_with_a_clear_reason(faulty_sweep, full_disk):
    if full_disk is None:
        pytest.skip("mount -t tmpfs is not permitted here: no small real disk to fill")
    trial, run = faulty_sweep["trials"][DISK_SEED], faulty_sweep["runs"][DISK_SEED]
    assert trial.status == "ERROR"
    reason = faulty_sweep["out"].errors[Path(trial.path).name]
    assert "disk full" in reason and "storage_path" in reason, reason
    assert run.info.status == "FAILED" and "disk full" in run.data.tags[FAILURE_TAG]
    assert list(full_disk.glob("qlora-ckpt-*")), "the checkpoint was not staged on the small disk"
