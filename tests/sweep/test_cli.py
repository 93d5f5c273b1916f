"""The `qlora-sweep` entry point as a user runs it: plan prints the seed table; bad input is one line."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPEN_LLAMA = ROOT.parent / "shared" / "models" / "open_llama_3b_v2"


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_plan_prints_the_seed_table_without_weights():
    out = cli("plan", "examples/seed-study.yaml", "--set", f"model.path={OPEN_LLAMA}")
    assert out.returncode == 0, out.stderr
    for count in ("2,662,400", "5,324,800", "12,994,560"):
        assert count in out.stdout
    assert "lora.r: choice [8, 16]" in out.stdout and "trials_per_gpu" in out.stdout


def test_bad_sweep_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  space:\n    training.lr: {loguniform: [1e-3, 1e-5]}\n")
    out = cli("plan", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "search.space" in out.stderr and "low < high" in out.stderr


@pytest.mark.slow
def test_every_trial_failing_exits_non_zero(tmp_path):
    cfg = tmp_path / "fails.yaml"
    cfg.write_text(
        f"name: allfail\nstorage_path: {tmp_path}\nmax_failures: 0\nmodel: {{path: tiny}}\n"
        "data: {eval_rows: 30}\ntraining: {max_steps: 2, eval_interval: 1, max_seq_len: 16}\n"
        "search: {num_samples: 2, max_concurrent_trials: 2, space: {lora.r: {choice: [2, 4]}}}\n"
        "resources: {cpu: 1, gpu: 0}\n")
    out = cli("run", str(cfg))
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "0 finished" in out.stdout and "2 failed" in out.stdout
    assert "max_seq_len" in out.stdout  # the reason is shown
