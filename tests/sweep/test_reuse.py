"""Issue 27's scenarios through the CLI (real Ray, real MLflow, the tiny model): a reused output dir
or sweep name with another config is a clear error that touches nothing; the same config resumes
without training anything twice; --overwrite moves the old results aside and starts a sweep whose
report, MLflow parent run and registered champion hold only its own trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sweep.cli import main
from sweep.tracking import client_for
from trainables.provenance import RECORD, config_hash

pytestmark = pytest.mark.slow

TRAIN = ["model.path=tiny", "data.eval_rows=8", "training.max_steps=2", "training.eval_interval=2"]
TRAIN += ["training.batch_size=2", "training.max_seq_len=128", "generation.num_prompts=0"]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`: size and modification time (what 'untouched' means here)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _sets(*sets: str) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def _train(capsys, out: Path, *sets: str, flags: tuple[str, ...] = ()) -> tuple[int, str]:
    code = main(["train", "--output", str(out), *flags, *_sets(*TRAIN, *sets)])
    io = capsys.readouterr()
    return code, io.out + io.err


def test_train_output_dir_is_resumed_only_by_its_own_config(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "out"
    code, text = _train(capsys, out)
    assert code == 0, text
    first = _files(out)
    ckpts = {k: v for k, v in first.items() if k.startswith("checkpoints/")}

    # Issue 27, scenario 1: 16-bit used to report the 4-bit result; r=32 died in load_checkpoint.
    for change, diff in (
        ("quantization.bits=16", "quantization.bits: 4 -> 16"),
        ("lora.r=32", "lora.r: 8 -> 32"),
    ):
        code, text = _train(capsys, out, change)
        assert code == 2, text
        assert "Traceback" not in text and "eval loss" not in text  # refused before any training
        assert f"  {diff}" in text and "Nothing was changed" in text
        assert "--output DIR" in text and "--overwrite" in text and RECORD in text
        assert _files(out) == first

    # The same config (a storage-only field changed): resumed, not trained again.
    code, text = _train(capsys, out, "training.keep_checkpoints=3")
    assert code == 0 and f"resuming the run in {out}" in text, text
    assert {k: v for k, v in _files(out).items() if k.startswith("checkpoints/")} == ckpts

    # --overwrite: the old run is moved aside whole, the new one trains with its own config.
    code, text = _train(capsys, out, "quantization.bits=16", flags=("--overwrite",))
    assert code == 0, text
    moved = Path(text.split("moved the earlier results aside to ")[1].split()[0])
    assert moved.parent == tmp_path and moved.name.startswith("out.replaced-")
    assert {k: v[0] for k, v in _files(moved).items()} == {k: v[0] for k, v in first.items()}
    record = json.loads((out / RECORD).read_text())
    assert record["config"]["quantization"]["bits"] == 16
    final = json.loads((out / "checkpoints" / "step-0000002" / RECORD).read_text())
    assert (
        final["config_hash"]
        == record["config_hash"]
        != json.loads((moved / RECORD).read_text())["config_hash"]
    )


# ---------------------------------------------------------------- sweeps


def _sweep_args(storage: Path, *sets: str) -> list[str]:
    cfg = {
        "name": "reuse",
        "storage_path": str(storage),
        "model": {"path": "tiny"},
        "data": {"eval_rows": 8},
        "training": {"max_steps": 2, "eval_interval": 2, "batch_size": 2, "max_seq_len": 128},
        "generation": {"num_prompts": 0},
        "search": {
            "space": {"lora.r": {"choice": [4, 8]}},
            "num_samples": 2,
            "max_concurrent_trials": 2,
            "scheduler": {"type": "none"},
            "seed": 0,
        },
        "resources": {"cpu": 1, "gpu": 0},
    }
    path = storage.parent / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["run", str(path), *_sets(*sets)]


SECOND = ("training.max_steps=4", "lora.alpha=64", "search.num_samples=3")  # the second sweep


def _run(capsys, args: list[str]) -> tuple[int, str]:
    code = main(args)
    io = capsys.readouterr()
    return code, io.out + io.err


def _mlflow_state(uri: str) -> tuple[list, list]:
    """Every run (id, status, end, tags, params, metric keys) and every registered version."""
    client = client_for(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = sorted(
        (r.info.run_id, r.info.status, r.info.end_time, r.data.tags, r.data.params, sorted(r.data.metrics))
        for r in client.search_runs(exps)
    )
    versions = sorted((v.name, v.version, v.run_id, v.current_stage) for v in client.search_model_versions())
    return [json.dumps(r, sort_keys=True, default=str) for r in runs], versions


def _trial_rows(exp: Path) -> dict[str, list[int]]:
    """Each trial's reported steps, from Ray's own result files."""
    return {
        f.parent.name: [json.loads(line)["step"] for line in f.read_text().splitlines() if line.strip()]
        for f in exp.glob("*/result.json")
    }


def _children(uri: str, parent: str) -> list:
    from sweep.tracking import child_runs

    return child_runs(client_for(uri), parent)


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory):
    """The issue's first sweep (2 trials, 2 steps) in a local Ray shared by this file's sweeps."""
    import ray

    storage = tmp_path_factory.mktemp("reuse") / "results"
    storage.mkdir()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(_sweep_args(storage)) == 0
        yield storage
    finally:
        ray.shutdown()


def test_a_sweep_name_with_another_config_is_refused_and_left_as_it_was(first_sweep, capsys):
    storage, exp = first_sweep, first_sweep / "reuse"
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    files, mlflow_before = _files(storage), _mlflow_state(uri)
    assert len(mlflow_before[1]) == 1  # the first sweep's champion

    code, text = _run(capsys, _sweep_args(storage, *SECOND))
    assert code == 2, text
    assert "Traceback" not in text and "===" not in text  # refused before Ray or MLflow did anything
    for diff in ("lora.alpha: 16.0 -> 64.0", "search.num_samples: 2 -> 3", "training.max_steps: 2 -> 4"):
        assert f"  {diff}" in text, text
    assert f"qlora-sweep resume {exp}" in text and "--set name=" in text and "--overwrite" in text
    assert _files(storage) == files and _mlflow_state(uri) == mlflow_before


def test_the_same_config_again_resumes_and_trains_nothing_twice(first_sweep, capsys):
    storage, exp = first_sweep, first_sweep / "reuse"
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    rows = _trial_rows(exp)
    runs_before, versions_before = _mlflow_state(uri)

    code, text = _run(capsys, _sweep_args(storage, "tracking.model_name=reuse"))  # a tracking-only change
    assert code == 0, text
    assert "sweep reuse already exists with this config: resuming it" in text
    assert _trial_rows(exp) == rows and all(steps == [2] for steps in rows.values()) and len(rows) == 2
    parents = [r for r in runs_before if '"qlora_sweep.role": "sweep"' in r]
    assert len(parents) == 1 and len(_mlflow_state(uri)[0]) == len(runs_before)  # no new run of any kind
    assert _mlflow_state(uri)[1] == versions_before  # the champion is not registered a second time


def test_overwrite_starts_a_new_sweep_that_holds_only_its_own_trials(first_sweep, capsys):
    storage, exp = first_sweep, first_sweep / "reuse"
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    client = client_for(uri)
    old_trials = {d.name for d in exp.iterdir() if (d / "result.json").is_file()}
    old_ids = {
        json.loads(next(iter((exp / t / "result.json").read_text().splitlines())))["trial_id"]
        for t in old_trials
    }
    old_record = json.loads((exp / RECORD).read_text())
    old_parent = old_record["mlflow_parent_run_id"]
    old_children = sorted(r.info.run_id for r in _children(uri, old_parent))
    old_versions = _mlflow_state(uri)[1]

    code, text = _run(capsys, [*_sweep_args(storage, *SECOND), "--overwrite"])
    assert code == 0, text
    moved = Path(text.split("moved the earlier sweep reuse aside to ")[1].split()[0])
    assert moved.parent == storage and moved.name.startswith("reuse.replaced-")
    assert {d.name for d in moved.iterdir() if (d / "result.json").is_file()} == old_trials

    rows = _trial_rows(exp)
    # lora.r in {4, 8}: the 3rd proposal repeats a config and is answered, not trained (sweep/dedup.py)
    assert len(rows) == 2 and all(steps == [2, 4] for steps in rows.values()), rows
    new_ids = {json.loads((exp / t / "result.json").read_text().splitlines()[0])["trial_id"] for t in rows}
    record = json.loads((exp / RECORD).read_text())
    assert record["config"]["lora"]["alpha"] == 64 and record["config_hash"] != old_record["config_hash"]

    # MLflow: a new parent with the 3 new trials; the old parent keeps its own 2, untouched.
    parent = record["mlflow_parent_run_id"]
    assert parent != old_parent
    assert client.get_run(parent).data.tags["qlora_sweep.config_hash"] == record["config_hash"]
    assert {r.data.tags["qlora_sweep.trial_id"] for r in _children(uri, parent)} == new_ids
    assert sorted(r.info.run_id for r in _children(uri, old_parent)) == old_children

    # The report ranks the new sweep's trials only.
    report = (exp / "report.md").read_text()
    assert all(t in report for t in new_ids) and not any(t in report for t in old_ids), report
    assert main(["report", str(moved)]) == 0  # the old sweep's report, from its own parent run
    old_report = (moved / "report.md").read_text()
    assert all(t in old_report for t in old_ids) and not any(t in old_report for t in new_ids)

    # The registry: the old version stays; @champion moved to a trial of the new sweep.
    versions = _mlflow_state(uri)[1]
    assert versions[: len(old_versions)] == old_versions and len(versions) == len(old_versions) + 1
    champion = client.get_model_version_by_alias("reuse", "champion")
    assert champion.run_id in {r.info.run_id for r in _children(uri, parent)}

    # The moved-aside sweep cannot be resumed under the name the new one holds now.
    code, text = _run(capsys, ["resume", str(moved)])
    assert code == 2 and "moved aside by --overwrite" in text, text
    assert config_hash(record["config"]) == record["config_hash"]
