"""No config is trained twice: the DedupSearcher around the sweep's real OptunaSearch, driven directly,
through the replay, and in real Ray Tune sweeps (a finite space larger than num_samples, resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.search_generator import SearchGenerator

from sweep.config import load_sweep_config
from sweep.replay import simulate, synthetic_grid
from sweep.search import reports_per_trial, scheduler, searcher
from sweep.space import tune_space

ROOT = Path(__file__).resolve().parents[2]
FOUR = "search.space={lora.r: {choice: [4, 8]}, quantization.bits: {choice: [4, 16]}}"


def _cfg(*sets):
    return load_sweep_config(None, ["model.path=tiny", *sets])


def _started(cfg):
    s = searcher(cfg)
    s.set_search_properties(None, None, tune_space(cfg.search.space))
    return s


def _inner_trials(s):
    """(params, values) of every finished Optuna trial behind the wrapper."""
    return [(t.params, t.values) for t in s.searcher._ot_study.trials if t.state.is_finished()]


def test_quickstart_six_trials_are_six_distinct_configs():
    """examples/quickstart.yaml's space, seed and initial points, replayed on synthetic curves: the bare
    OptunaSearch re-proposes r=8/all-linear/16-bit as its 4th trial (as the README's real run did);
    behind the wrapper the 6 trials are 6 different configs, the initial points first."""
    cfg = load_sweep_config(ROOT / "examples" / "quickstart.yaml")
    grid = synthetic_grid(cfg.search.space, steps=cfg.training.max_steps, every=cfg.training.eval_interval)
    sched = scheduler(cfg, reports_per_trial(cfg))
    bare = simulate(cfg, grid, 1, searcher(cfg).searcher, sched).configs()
    assert len(bare) == 6 and bare[3] == bare[1] == {
        "lora.r": 8,
        "lora.target_modules": "all-linear",
        "quantization.bits": 16,
    }
    run = simulate(cfg, grid, 1, searcher(cfg), scheduler(cfg, reports_per_trial(cfg)))
    configs = run.configs()
    assert len(configs) == 6 and len({tuple(c.values()) for c in configs}) == 6
    assert configs[:2] == cfg.search.initial_points
    assert run.search["answered"] >= 1  # the repeat was answered from the earlier trial


def test_finite_space_is_exhausted_then_finished():
    s = _started(_cfg(FOUR, "search.seed=3"))
    seen = []
    while (config := s.suggest(f"t{len(seen)}")) != Searcher.FINISHED:
        assert config is not None  # nothing runs concurrently here: never a wait
        seen.append(tuple(config.values()))
        s.on_trial_complete(
            f"t{len(seen) - 1}", {"eval_loss": 3.0 - 0.1 * config["lora.r"] / config["quantization.bits"]}
        )
    assert sorted(seen) == [(4, 4), (4, 16), (8, 4), (8, 16)]
    assert s.stats()["finished"] == "all 4 configs of the space were tried"
    assert s.suggest("again") == Searcher.FINISHED


def test_duplicate_of_a_running_trial_is_held_and_another_config_starts_at_once():
    """A repeat of a running config never idles a slot: its Optuna trial is held, a new config starts
    now, and the held trial is answered with the running trial's result when that one ends."""
    point = "{lora.r: 8, quantization.bits: 4}"
    s = _started(_cfg(FOUR, f"search.initial_points=[{point}, {point}]"))
    first = s.suggest("a")
    assert first == {"lora.r": 8, "quantization.bits": 4}
    second = s.suggest("b")  # the repeated initial point is held; another config runs beside the first
    assert second not in (None, Searcher.FINISHED) and second != first
    held = s.held[s.key(first)]
    assert list(s.held) == [s.key(first)] and held[0] == "b~1" and _inner_trials(s) == []
    s.on_trial_complete("a", {"eval_loss": 2.5, "training_iteration": 2})
    told = [({"lora.r": 8, "quantization.bits": 4}, [2.5])] * (1 + len(held))  # told, not trained
    assert _inner_trials(s) == told and s.answered == len(held) and s.held == {}


def test_stopped_trial_is_known_by_its_last_result_and_errors_as_failures():
    """A trial ASHA stopped is completed with its last result (what Tune tells Optuna): a duplicate of it
    is answered with that value; a failed trial's duplicate is answered as failed, not retrained."""
    r8 = "{lora.r: 8, quantization.bits: 4}"
    r4 = "{lora.r: 4, quantization.bits: 4}"
    s = _started(_cfg(FOUR, f"search.initial_points=[{r8}, {r4}, {r8}, {r4}]"))
    assert s.suggest("a") and s.suggest("b")
    s.on_trial_complete("a", {"eval_loss": 3.1, "training_iteration": 1})  # stopped at the first rung
    s.on_trial_complete("b", None, error=True)
    third = s.suggest("c")  # both initial duplicates answered, then a new config
    assert third not in ({"lora.r": 8, "quantization.bits": 4}, {"lora.r": 4, "quantization.bits": 4})
    states = [
        (t.params["lora.r"], t.state.name, t.value)
        for t in s.searcher._ot_study.trials
        if t.state.is_finished()
    ]
    assert states.count((8, "COMPLETE", 3.1)) >= 2 and states.count((4, "FAIL", None)) >= 2
    assert s.answered == len(states) - 2  # everything but the two trained trials was answered


def test_two_objectives_answered_with_both_metrics():
    point = "{lora.r: 4, quantization.bits: 16}"
    s = _started(_cfg(FOUR, "search.metric2=gpu_seconds", f"search.initial_points=[{point}, {point}]"))
    s.suggest("a")
    s.on_trial_complete("a", {"eval_loss": 2.0, "gpu_seconds": 40.0, "judge_score": 7})
    s.suggest("b")
    assert [v for _, v in _inner_trials(s)] == [[2.0, 40.0], [2.0, 40.0]]
    assert s.known[s.key({"lora.r": 4, "quantization.bits": 16})][0] == {
        "eval_loss": 2.0,
        "gpu_seconds": 40.0,
    }


def test_continuous_space_stops_after_repeated_duplicates():
    """With a continuous domain there is no 'untried neighbour' to fall back on: after MAX_ASKS
    duplicates in a row (here: the same initial point four times) the search stops and says why."""
    p = "{lora.r: 8, training.lr: 0.001}"
    s = _started(
        _cfg(
            "search.space={lora.r: {choice: [4, 8]}, training.lr: {loguniform: [1e-4, 1e-2]}}",
            f"search.initial_points=[{p}, {p}, {p}, {p}]",
        )
    )
    s.suggest("a")
    s.on_trial_complete("a", {"eval_loss": 2.0})
    assert s.suggest("b") == Searcher.FINISHED
    assert s.stats()["finished"] == "the searcher proposed only configs already tried (3 in a row)"
    assert s.answered == 3


def test_converged_tpe_moves_to_the_nearest_untried_config():
    """TPE re-proposes its favourite: after MAX_ASKS answered duplicates the wrapper proposes an untried
    config one path away from it instead of stopping, so a finite space is still explored."""
    best = "{lora.r: 8, quantization.bits: 16}"
    s = _started(_cfg(FOUR, f"search.initial_points=[{best}, {best}, {best}, {best}]"))
    s.suggest("a")
    s.on_trial_complete("a", {"eval_loss": 1.0})
    nxt = s.suggest("b")
    assert s.answered == 3
    assert nxt in ({"lora.r": 4, "quantization.bits": 16}, {"lora.r": 8, "quantization.bits": 4})


def test_state_survives_tunes_save_and_restore(tmp_path):
    """Tune's SearchGenerator saves every wrapper with a `.searcher` (get_state) and the base searcher;
    a fresh chain restored from that directory still knows what ran, what runs and the count."""
    cfg = _cfg(
        FOUR, "search.initial_points=[{lora.r: 4, quantization.bits: 4}, {lora.r: 4, quantization.bits: 4}]"
    )

    def chain():
        gen = SearchGenerator(ConcurrencyLimiter(searcher(cfg), max_concurrent=2))
        gen.set_search_properties(None, None, tune_space(cfg.search.space))
        return gen

    gen = chain()
    dedup = gen.searcher.searcher
    first = dedup.suggest("a")
    dedup.on_trial_complete("a", {"eval_loss": 2.0})
    second = dedup.suggest("b")  # the repeated initial point is answered, then a new config runs
    gen.save_to_dir(str(tmp_path), session_str="x")

    restored = chain()
    restored.restore_from_dir(str(tmp_path))
    again = restored.searcher.searcher
    assert again.answered == dedup.answered >= 1 and again.running == {again.key(second): "b"}
    assert again.known[again.key(first)] == ({"eval_loss": 2.0}, False)
    again.on_trial_complete("b", {"eval_loss": 2.2})
    proposals = [first, second]
    while (config := again.suggest(f"n{len(proposals)}")) != Searcher.FINISHED:
        proposals.append(config)
        again.on_trial_complete(f"n{len(proposals) - 1}", {"eval_loss": 2.5})
    assert len({tuple(c.values()) for c in proposals}) == len(proposals) == 4


# ---------------------------------------------------------------- real Ray Tune sweeps (slow)

TINY = {
    "model": {"path": "tiny"},
    "data": {"eval_rows": 30},
    "training": {"max_steps": 4, "eval_interval": 2, "batch_size": 4, "grad_accum": 1, "max_seq_len": 256},
    "generation": {"num_prompts": 1, "max_new_tokens": 4},
    "resources": {"cpu": 1, "gpu": 0},
    "tracking": {"register_best": False},
}
SPACE = {"lora.r": {"choice": [4, 8]}, "quantization.bits": {"choice": [4, 16]}}


def _trial_configs(exp: Path, *, written_only: bool = False) -> list[tuple]:
    """The config of every trial Ray started, from its own params.json files. While the sweep runs
    (`written_only`), a file the driver is still writing (empty or cut short) is not counted yet."""
    import json

    configs = []
    for path in exp.glob("*/params.json"):
        try:
            configs.append(tuple(sorted(json.loads(path.read_text()).items())))
        except json.JSONDecodeError:
            if not written_only:
                raise
    return sorted(configs)


@pytest.mark.slow
def test_sweep_of_a_four_config_space_with_eight_samples_trains_four(tmp_path, capsys):
    import ray

    from sweep.config import SweepConfig
    from sweep.session import run_and_summarize

    point = {"lora.r": 8, "quantization.bits": 4}
    search = {
        "space": SPACE,
        "num_samples": 8,
        "max_concurrent_trials": 2,
        "seed": 1,
        "initial_points": [point, point],
    }  # the repeat is answered from the first: >= 1 answered
    cfg = SweepConfig.model_validate(
        {**TINY, "name": "four", "storage_path": str(tmp_path), "search": search}
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert run_and_summarize(cfg) == 0
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    configs = _trial_configs(tmp_path / "four")
    assert len(configs) == 4 and len(set(configs)) == 4, configs
    answered = int(out.split("proposals answered from earlier trials: ")[1].split()[0])
    assert answered >= 1
    assert "all 4 configs of the space were tried" in out
    report = (tmp_path / "four" / "report.md").read_text()
    assert f"Proposals answered from earlier trials: {answered}." in report


@pytest.mark.slow
def test_resumed_sweep_never_trains_a_config_twice(tmp_path):
    """As tests/sweep/test_resume.py: the driver is SIGKILLed once a trial finished and the next one
    runs, then resumed; across both runs the 4-config space is trained once per config, although
    num_samples is 8: the dedup state came back with the experiment."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    exp = tmp_path / "results" / "again"
    cfg = {
        **TINY,
        "name": "again",
        "storage_path": str(tmp_path / "results"),
        "search": {
            "space": SPACE,
            "num_samples": 8,
            "max_concurrent_trials": 1,
            "seed": 2,
            "scheduler": {"type": "none"},
        },
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    log = (tmp_path / "driver.log").open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "run", str(tmp_path / "sweep.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )

    def finished() -> int:
        return sum('"done": true' in p.read_text() for p in exp.glob("*/result.json"))

    end = time.monotonic() + 900  # polled with a deadline
    while not (finished() >= 1 and len(_trial_configs(exp, written_only=True)) >= 2):
        assert proc.poll() is None and time.monotonic() < end, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    resumed = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "resume", str(exp)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    configs = _trial_configs(exp)
    assert len(configs) == 4 and len(set(configs)) == 4, configs
    assert "all 4 configs of the space were tried" in resumed.stdout
