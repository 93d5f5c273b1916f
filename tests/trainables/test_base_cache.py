"""A worker process reuses its base model across trials (issue 22), and that changes nothing but time."""

import json
import os
import subprocess
import sys
from pathlib import Path

from trainables import base_cache
from trainables.config import load_trial_config
from trainables.phases import PHASES
from trainables.reporting import PrintReporter
from trainables.trial import run_trial

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    "data.eval_rows=40",
    "training.batch_size=4",
    "training.max_seq_len=256",
    "training.lr=3e-3",
    "generation.max_new_tokens=8",
    "quantization.bits=4",
    "training.max_steps=6",
    "training.eval_interval=3",
    "generation.num_prompts=1",
]


def tiny_cfg(tiny_model_dir, *sets):
    return load_trial_config(None, [f"model.path={tiny_model_dir}", *sets])


SECOND = ["lora.r=16", "lora.target_modules=all-linear"]


def test_second_trial_reuses_the_base_and_trains_as_in_a_fresh_process(tiny_model_dir, tmp_path):
    base_cache.drop_held()
    before = base_cache.counts()
    first = run_trial(
        tiny_cfg(tiny_model_dir, *SETS, "lora.r=4", "lora.target_modules=attention"),
        PrintReporter(tmp_path / "a", echo=lambda _: None),
    )
    second = run_trial(
        tiny_cfg(tiny_model_dir, *SETS, *SECOND), PrintReporter(tmp_path / "b", echo=lambda _: None)
    )
    after = base_cache.counts()
    assert (first["base_reused"], second["base_reused"]) == (False, True)
    assert after["loads"] - before["loads"] == 1 and after["reuses"] - before["reuses"] == 1
    for name in PHASES:  # every phase is reported, and the reused base was not loaded again
        assert f"phase_{name}_s" in second
    assert second["phase_train_s"] > 0 and second["fixed_s"] > 0
    assert second["phase_load_s"] < first["phase_load_s"]

    # The same config in a fresh process (nothing held, nothing compiled before it), same seed.
    code = (
        "import json, sys; from trainables.config import load_trial_config; "
        "from trainables.reporting import PrintReporter; from trainables.trial import run_trial; "
        f"cfg = load_trial_config(None, ['model.path=' + sys.argv[1], *{SETS + SECOND!r}]); "
        "m = run_trial(cfg, PrintReporter(sys.argv[2], echo=lambda _: None)); "
        "print(json.dumps({'eval_loss': m['eval_loss'], 'base_reused': m['base_reused']}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_dir), str(tmp_path / "fresh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["base_reused"] is False
    assert abs(fresh["eval_loss"] - second["eval_loss"]) < 1e-4, (fresh, second["eval_loss"])
    assert second["eval_loss"] < second["base_eval_loss"]


def test_a_different_base_is_loaded_and_the_held_one_freed(tiny_model_dir, tmp_path):
    base_cache.drop_held()
    run_trial(tiny_cfg(tiny_model_dir, *SETS), PrintReporter(tmp_path / "a", echo=lambda _: None))
    other = run_trial(
        tiny_cfg(tiny_model_dir, *SETS, "quantization.bits=16"),
        PrintReporter(tmp_path / "b", echo=lambda _: None),
    )
    assert other["base_reused"] is False  # 16-bit is another base: loaded, the 4-bit one dropped
