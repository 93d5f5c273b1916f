"""The `qlora-sweep` entry point as a user runs it: plan prints the seed table; bad input is one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import OPEN_LLAMA, ROOT

# The README's offline command for the seed table, word for word (run from the repository root).
SEED_PLAN = ("plan", "examples/seed-study.yaml", "--set", "model.path=examples/models/open_llama_3b_v2")


def cli(*args, timeout=900, **env):
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def test_plan_prints_the_seed_table_without_weights():
    assert (ROOT / SEED_PLAN[-1].partition("=")[2]) == OPEN_LLAMA  # the config shipped in the repo
    out = cli(*SEED_PLAN, HF_HUB_OFFLINE="1")  # offline: the repository alone
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    seed_table = [
        ("8", "attention", "2,662,400"),
        ("16", "attention", "5,324,800"),
        ("8", "all-linear+lm_head", "12,994,560"),
    ]
    for r, targets, count in seed_table:
        assert any(row[:2] == [r, targets] and row[3] == count for row in rows if len(row) > 3), out.stdout
    assert "lora.r: choice [8, 16]" in out.stdout and "trials_per_gpu" in out.stdout
    # Real runs still fetch the real model: the override is the offline command's, not the file's.
    hub_id = yaml.safe_load((ROOT / SEED_PLAN[1]).read_text())["model"]["path"]
    assert hub_id == "openlm-research/open_llama_3b_v2"


def test_bad_sweep_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  space:\n    training.lr: {loguniform: [1e-3, 1e-5]}\n")
    out = cli("plan", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "search.space" in out.stderr and "low < high" in out.stderr


def test_run_starts_ray_before_torch_loads():
    """`run` validates its config and claims its experiment before Ray starts; torch (seconds on a CUDA
    build) then loads beside Ray's start (sweep/ray_start.py), so that path must not import it."""
    code = (
        "import sys; from sweep.config import load_sweep_config; from sweep.reuse import experiment_dir; "
        "import sweep.ray_start; cfg = load_sweep_config('examples/seed-study.yaml', []); experiment_dir(cfg); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_every_trial_failing_exits_non_zero(tmp_path):
    cfg = tmp_path / "fails.yaml"
    cfg.write_text(
        f"name: allfail\nstorage_path: {tmp_path}\nmax_failures: 0\nmodel: {{path: tiny}}\n"
        "data: {eval_rows: 30}\ntraining: {max_steps: 2, eval_interval: 1, max_seq_len: 16}\n"
        "search: {num_samples: 2, max_concurrent_trials: 2, space: {lora.r: {choice: [2, 4]}}}\n"
        "resources: {cpu: 1, gpu: 0}\n"
    )
    out = cli("run", str(cfg))
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "0 finished" in out.stdout and "2 failed" in out.stdout
    assert "max_seq_len" in out.stdout  # the reason is shown


def _blank_description_csv(path: Path) -> Path:
    """40 rows of 10 products, 8 of them with a blank description."""
    lines = ["product,category,description"]
    lines += [
        f"Lamp {i % 10},Lighting,{'' if i % 5 == 0 else f'A warm lamp (model {i}).'}" for i in range(40)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_counts_dropped_rows_and_eval_loads_the_adapter_on_another_cache(tmp_path, monkeypatch, capsys):
    """`train` says how many rows it dropped and why; its adapter names the built-in base portably (no
    path of this machine) and `eval --adapter` loads it from a fresh cache ("another machine"), offline."""
    from sweep.cli import main
    from trainables.builtin_models import cache_dir

    data = _blank_description_csv(tmp_path / "blank.csv")
    common = [
        f"data.source={data}",
        "data.eval_rows=6",
        "training.max_seq_len=128",
        "training.batch_size=4",
        "generation.num_prompts=1",
        "generation.max_new_tokens=4",
    ]
    sets = [
        arg
        for s in ["model.path=tiny", "training.max_steps=2", "training.eval_interval=2", *common]
        for arg in ("--set", s)
    ]
    assert main(["train", "--output", str(tmp_path / "out"), *sets]) == 0
    out = capsys.readouterr().out
    assert "8 rows dropped (blank description)" in out and "40 rows read" in out, out
    time_line = next(line for line in out.splitlines() if line.startswith("time: "))  # where the seconds went
    assert "fixed (data " in time_line and "training at" in time_line
    ran = next(line for line in out.splitlines() if line.startswith("ran "))  # how it ran (the run plan)
    assert "eager (cpu: never compiled)" in ran and "gradient checkpointing" in ran and "fits" in ran
    adapter = Path(out.split("adapter: ", 1)[1].split()[0])
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"].startswith("qlora-sweep:tiny-v")
    for f in adapter.iterdir():  # no file of the adapter names a path of this machine
        text = f.read_bytes().decode("utf-8", "replace")
        assert str(cache_dir()) not in text and str(tmp_path) not in text, f.name
    facts = json.loads((adapter / "base_model.json").read_text())
    assert facts["base_model"] == config["base_model_name_or_path"] and facts["build"]["name"] == "tiny"
    final = json.loads((adapter.parent / "trainer_state.json").read_text())["last_metrics"]

    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path / "another-machine"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sets = [arg for s in common for arg in ("--set", s)]  # no model.path: the adapter's base is used
    assert main(["eval", "--adapter", str(adapter), *sets]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (
        tmp_path / "another-machine" / "models" / config["base_model_name_or_path"].split(":", 1)[1]
    ).is_dir()
    assert result["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-4)  # the same base, rebuilt
    assert result["base_eval_loss"] == pytest.approx(final["base_eval_loss"], rel=1e-4)
