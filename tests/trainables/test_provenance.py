"""The config record (issue 27): which fields the hash covers, what a difference says, how results
are moved aside, and that a checkpoint records the config that trained it."""

from __future__ import annotations

import json

import pytest

from sweep.config import load_sweep_config
from trainables import provenance as pv
from trainables.config import load_trial_config
from trainables.reporting import PrintReporter
from trainables.trial import run_trial


def test_the_hash_ignores_where_results_go_but_not_what_makes_them():
    base = load_trial_config(None, ["model.path=tiny"])
    same = load_trial_config(
        None,
        ["model.path=tiny", "output_dir=/elsewhere", "training.keep_checkpoints=5", "judge.concurrency=9"],
    )
    assert pv.config_hash(base) == pv.config_hash(same) and pv.differences(base, same) == []
    for change in ("lora.r=32", "quantization.bits=16", "training.lr=0.1", "data.seed=1", "model.path=x"):
        other = load_trial_config(None, ["model.path=tiny", change])
        assert pv.config_hash(other) != pv.config_hash(base), change
        assert [d.split(":")[0] for d in pv.differences(base, other)] == [change.split("=")[0]]


def test_a_sweep_hash_covers_the_search_not_the_tracking_or_placement():
    base = load_sweep_config(None, ["model.path=tiny"])
    same = load_sweep_config(
        None,
        [
            "model.path=tiny",
            "name=other",
            "storage_path=/x",
            "tracking.register_best=false",
            "resources.cpu=2",
        ],
    )
    assert pv.differences(base, same) == []
    other = load_sweep_config(
        None, ["model.path=tiny", "search.num_samples=3", "lora.alpha=64", "training.max_steps=4"]
    )
    assert pv.differences(base, other) == [
        "lora.alpha: 16.0 -> 64.0",
        "search.num_samples: null -> 3",
        "training.eval_interval: 50 -> 4",  # the validator fits eval_interval into max_steps
        "training.max_steps: null -> 4",
    ]


def test_an_older_record_is_read_with_todays_defaults():
    cfg = load_trial_config(None, ["model.path=tiny"])
    old = cfg.model_dump(mode="json")
    del old["training"]["compile"]  # a record written before this field existed
    assert pv.differences(old, cfg) == []


def test_a_refusal_names_each_difference_and_the_ways_forward(tmp_path):
    old = load_trial_config(None, ["model.path=tiny"])
    new = load_trial_config(None, ["model.path=tiny", "lora.r=32"])
    with pytest.raises(pv.ResultsOfAnotherConfig) as err:
        pv.refuse("--output", tmp_path, old.model_dump(mode="json"), new, ["a new --output", "--overwrite"])
    text = str(err.value)
    assert text.startswith(f"{tmp_path} holds results of another config ({pv.config_hash(old)};")
    assert "  lora.r: 8 -> 32" in text and "  - a new --output" in text and "Nothing was changed" in text
    assert err.value.field == "--output"


def test_archive_moves_aside_and_never_clobbers(tmp_path):
    first = tmp_path / "out"
    first.mkdir()
    (first / "a").write_text("1")
    moved = pv.archive(first)
    first.mkdir()
    (first / "a").write_text("2")
    again = pv.archive(first)
    assert moved != again and not first.exists()
    assert moved.name.startswith("out.replaced-") and again.name.startswith("out.replaced-")
    assert {(moved / "a").read_text(), (again / "a").read_text()} == {"1", "2"}


def test_every_checkpoint_records_the_config_that_trained_it(tiny_model_dir, tmp_path):
    sets = ["data.eval_rows=8", "training.max_steps=2", "training.eval_interval=1", "training.batch_size=2"]
    cfg = load_trial_config(None, [f"model.path={tiny_model_dir}", *sets, "generation.num_prompts=0"])
    run_trial(cfg, PrintReporter(tmp_path, keep=2, echo=lambda _: None))
    ckpts = sorted((tmp_path / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-0000001", "step-0000002"]
    for ckpt in ckpts:
        record = json.loads((ckpt / pv.RECORD).read_text())
        assert record["config_hash"] == pv.config_hash(cfg)
        assert record["config"] == cfg.model_dump(mode="json")
