"""The console of `qlora-sweep run` as a user sees it: Tune's table, one line per finished trial and
the summary; the libraries' progress bars, warnings and tracebacks in each trial's own trial.log."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from bitsandbytes.functional import has_avx512bf16

from sweep.console import LOG_NAME, trial_log
from sweep.report_read import find_parent, read_trials
from sweep.report_timeline import bars
from sweep.status_line import EVERY_ENV, status_text
from sweep.tracking import client_for

ROOT = Path(__file__).resolve().parents[2]
# What a user saw on the console before: one marker per kind of noise (progress bars of transformers,
# datasets and MLflow, bitsandbytes' kernel warning, TensorBoard hints, Ray's auth-token notice and
# forwarded worker output, flex_attention's GPU warning, Tune's per-trial tables and tracebacks).
NOISE = (
    "Loading weights",
    "Generating train split",
    "Saving the dataset",
    "Map:",
    "Filter:",
    "Downloading artifacts",
    "gemm_4bit_forward",
    "tensorboard",
    "Token authentication",
    "auth_token",
    "pid=",
    "flex_attention called without torch.compile",
    "Checkpoint successfully created",
    "started with configuration",
    "Traceback (most recent call last)",
    "Creating initial MLflow database tables",
    "A new study created",
)
TRIAL_LINE = re.compile(r"^trial ([0-9a-f]{8}) \(model\.path=(\S+)\): (.*)$")
DURATION = r"(\d+\.\d s|\d+ s|\d+ min( \d+ s)?)"  # sweep/human.py: 4.2 s, 52 s, 1 min 52 s
STATUS_LINE = re.compile(
    rf"^sweep: (\d+)/(\d+) trials done, \d+ running \| (best eval_loss \d+\.\d{{4}} \(trial [0-9a-f]{{8}}\)|"
    rf"no eval_loss yet) \| {DURATION} elapsed(, about {DURATION} left)?$"
)


def run_sweep_cli(tmp_path: Path, *flags: str, trials: int, **env: str) -> subprocess.CompletedProcess:
    """`qlora-sweep run` on the tiny 4-bit model from the sweep's own folder, with a relative
    storage_path as in the quickstart. With 2 trials the second asks for a hub model that does not
    exist: offline it fails at once. A fresh datasets cache makes `load_dataset` draw its
    "Generating train split" bar in the trial."""
    points = ["{model.path: tiny}", "{model.path: no-such-org/no-such-model}"][:trials]
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        "name: console\nstorage_path: ./results\nmax_failures: 0\nmodel: {path: tiny}\n"
        "quantization: {bits: 4}\ndata: {eval_rows: 8}\n"
        "training: {max_steps: 1, eval_interval: 1, batch_size: 2, max_seq_len: 192, packing: false}\n"
        "generation: {num_prompts: 1, max_new_tokens: 4}\n"
        f"search:\n  num_samples: {trials}\n  max_concurrent_trials: 2\n  scheduler: {{type: none}}\n"
        "  space: {model.path: {choice: [tiny, no-such-org/no-such-model]}}\n"
        f"  initial_points: [{', '.join(points)}]\n"
        "resources: {cpu: 1, gpu: 0}\n"
    )
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    cmd = [sys.executable, "-m", "sweep.cli", "run", str(cfg), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_quickstart_console_is_clean_and_trial_logs_hold_the_noise(tmp_path):
    # The status line every 5 s instead of every 30 (this sweep takes ~20 s; stdout is a pipe here:
    # plain lines).
    out = run_sweep_cli(tmp_path, trials=2, **{EVERY_ENV: "5"})
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]
    lines = console.splitlines()

    assert len(lines) < 80, console
    for noise in NOISE:
        assert noise.lower() not in console.lower(), f"{noise!r} reached the console:\n{console}"
    # Tune's table and our summary are there.
    assert "Trial status: 1 TERMINATED | 1 ERROR" in console and "=== sweep console: 1 finished" in console

    # One line per finished trial: config, eval loss, time, and why it stopped (or the failure's reason).
    done = {m[1]: (m[2], m[3]) for m in map(TRIAL_LINE.match, lines) if m}
    assert len(done) == 2 and len([ln for ln in lines if TRIAL_LINE.match(ln)]) == 2, console
    (good, (_, ok)), (bad, (_, failed)) = sorted(done.items(), key=lambda kv: kv[1][0] != "tiny")
    assert re.fullmatch(rf"eval_loss \d+\.\d{{4}} in {DURATION}: completed \(1/1 steps\)", ok), ok
    assert re.fullmatch(
        rf"failed after {DURATION}: ConfigError: model\.path: .*no-such-org/no-such-model.*", failed
    ), failed

    # The live status line, as plain lines (not a terminal): progress, best so far, elapsed; no
    # terminal control characters in a log. Numbers for a person in the summary: no exponents.
    status = [m for m in map(STATUS_LINE.match, lines) if m]
    assert status, console
    assert all(int(m[2]) == 2 and int(m[1]) <= 2 for m in status), [m[0] for m in status]
    assert "\x1b[" not in out.stdout and "\r" not in out.stdout
    assert not re.search(r"\de[+-]0", console), console
    summary = console.split("=== sweep console:", 1)[1]
    # Where the wall went outside the trials, from the CLI's own start (issue 30).
    assert re.search(r"^driver: startup [\d.]+ s, ray start [\d.]+ s, setup ", summary, re.M), summary
    assert re.search(r"^  trainable params: [\d.,]+k?$", summary, re.M), summary
    assert re.search(r"^  throughput: (\d{1,3}(,\d{3})?|[\d.]+k) tokens/s$", summary, re.M), summary

    # Each trial's log is in its trial directory and holds what the console no longer shows.
    experiment = tmp_path / "results" / "console"
    logs = {
        d.name.split("_")[3]: d / LOG_NAME
        for d in experiment.iterdir()
        if d.name.startswith("run_tune_trial_")
    }
    assert set(logs) == {good, bad} and all(p.is_file() for p in logs.values()), sorted(experiment.iterdir())
    good_log, bad_log = logs[good].read_text(), logs[bad].read_text()
    assert "Loading weights" in good_log and "Checkpoint successfully created" in good_log
    assert "Generating train split" in good_log
    if (
        has_avx512bf16()
    ):  # bitsandbytes' import-time warning, once per process, on CPUs where it tries that kernel
        assert "gemm_4bit_forward" in good_log + bad_log
    assert "Traceback (most recent call last)" in bad_log and "no-such-org/no-such-model" in bad_log
    assert f"{experiment}/*/{LOG_NAME}" in console  # the summary says where the logs are

    # The report's timeline, from this real sweep (one sweep serves both: a second costs CI a minute):
    # a bar per trial, the failed one from its run's times, the completed one's phases adding up to
    # the trial's wall time.
    client = client_for(f"sqlite:///{experiment.parent / 'mlflow.db'}")
    parent = find_parent(client, "console", None)
    trials = read_trials(client, parent.info.run_id)
    found = {b.label: b for b in bars(trials, parent.info.start_time, {})}
    assert sorted(found) == sorted([good, bad]), found
    timed = found[good]
    assert abs(sum(s for _, s in timed.segments) - timed.wall_s) <= 0.05 * timed.wall_s, timed
    assert timed.lane == "CPU · worker 1" and 0 < timed.start_s < timed.end_s


def test_trial_log_takes_c_level_output_and_gives_the_process_back(tmp_path, capfd):
    """A reused worker process: each trial's output (Python and C level, and a failure's traceback)
    goes to that trial's log, and the process's own stdout/stderr come back after each trial."""
    first, second = tmp_path / "a" / LOG_NAME, tmp_path / "b" / LOG_NAME
    with trial_log(first):
        print("python print")
        print("python stderr", file=sys.stderr)
        os.system("echo c-level echo; echo c-level stderr >&2")  # a child writes to the fds directly
    with pytest.raises(ValueError), trial_log(second):
        raise ValueError("the trial's own failure")
    print("after the trials")

    text = first.read_text()
    assert all(s in text for s in ("python print", "python stderr", "c-level echo", "c-level stderr"))
    assert "Traceback" in second.read_text() and "ValueError: the trial's own failure" in second.read_text()
    assert "python print" not in second.read_text()
    seen = capfd.readouterr()
    assert seen.out == "after the trials\n" and seen.err == ""


@pytest.mark.slow
def test_verbose_brings_everything_back(tmp_path):
    out = run_sweep_cli(tmp_path, "--verbose", trials=1)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]
    bnb_warning = ("gemm_4bit_forward",) if has_avx512bf16() else ()  # see test_quickstart_console_...
    for noise in ("Loading weights", *bnb_warning, "pid=", "started with configuration"):
        assert noise in console, f"{noise!r} missing with --verbose:\n{console}"
    assert not list((tmp_path / "results" / "console").glob(f"*/{LOG_NAME}"))  # it all went to the console


def _trial(tid: str, status: str, step: int | None = None, loss: float | None = None):
    result = {"step": step, "total_steps": 10} if step is not None else {}
    return SimpleNamespace(
        trial_id=tid, status=status, last_result={**result, "eval_loss": loss} if loss else result
    )


def test_status_line_says_progress_best_and_time_left():
    """Done/running/total, the best so far, elapsed; time left only once a tenth of the work is done."""
    early = [_trial("a", "RUNNING", 0), _trial("b", "PENDING")]
    assert status_text(early, 6, "eval_loss", "min", 5) == (
        "sweep: 0/6 trials done, 1 running | no eval_loss yet | 5.0 s elapsed"
    )
    later = [
        _trial("a", "TERMINATED", 10, 2.9649),
        _trial("b", "TERMINATED", 5, 3.3118),
        _trial("c", "ERROR", 1, 1.0),  # a failed trial's loss is no result
        _trial("d", "RUNNING", 5, 3.4),
    ]
    # 3 done + half of one = 3.5 of 6 trials after 70 s: 50 s left.
    assert status_text(later, 6, "eval_loss", "min", 70) == (
        "sweep: 3/6 trials done, 1 running | best eval_loss 2.9649 (trial a) | 1 min 10 s elapsed, about 50 s left"
    )
