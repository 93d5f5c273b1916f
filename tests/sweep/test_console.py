"""The console of `qlora-sweep run` as a user sees it: Tune's table, one line per finished trial and
the summary; the libraries' progress bars, warnings and tracebacks in each trial's own trial.log."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.console import LOG_NAME, trial_log

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


def run_sweep_cli(tmp_path: Path, *flags: str, trials: int) -> subprocess.CompletedProcess:
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
    }
    cmd = [sys.executable, "-m", "sweep.cli", "run", str(cfg), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_quickstart_console_is_clean_and_trial_logs_hold_the_noise(tmp_path):
    out = run_sweep_cli(tmp_path, trials=2)
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
    assert re.fullmatch(r"eval_loss \d+\.\d{4} in \d+s: completed \(1/1 steps\)", ok), ok
    assert re.fullmatch(
        r"failed after \d+s: ConfigError: model\.path: .*no-such-org/no-such-model.*", failed
    ), failed

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
    assert "gemm_4bit_forward" in good_log + bad_log  # bitsandbytes' import-time warning, once per process
    assert "Traceback (most recent call last)" in bad_log and "no-such-org/no-such-model" in bad_log
    assert f"{experiment}/*/{LOG_NAME}" in console  # the summary says where the logs are


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
    for noise in ("Loading weights", "gemm_4bit_forward", "pid=", "started with configuration"):
        assert noise in console, f"{noise!r} missing with --verbose:\n{console}"
    assert not list((tmp_path / "results" / "console").glob(f"*/{LOG_NAME}"))  # it all went to the console
