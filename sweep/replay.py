"""Replay a sweep against recorded learning curves: the sweep's own searcher and scheduler objects
(built by `sweep/search.py`, as `sweep/runner.py` builds them for Ray Tune), no training.

A grid file (benchmarks/grids/NAME.jsonl) holds one recorded trial per line: its config, training
seed, `setup_s`, the eval loss and `train_s` (training and eval seconds so far) at every eval
interval, and `final_s` (the whole trial: setup, training, evals, final generation and checkpoint).
NAME.meta.json holds the search space and the base sweep sections.

The simulation is event-driven, as Tune runs a sweep: up to `search.max_concurrent_trials` trials
at once; a trial started at time t reports eval point i at t + setup_s + train_s[i] (the last one at
t + final_s: the final report carries the final generation); at each report ASHA decides CONTINUE or
STOP and Optuna hears the result; a stopped or finished trial is completed with its last result
(what Tune tells both), and the freed slot asks the searcher again. A trial's cost is its seconds
until it finished or was stopped; the cost of a run at time t sums every trial's seconds up to t (with
one trial per GPU, its GPU-seconds); its wall is t itself.

Setup depends on the worker, as in a sweep: Tune hands a finished trial's worker to the next trial
(`reuse_actors`), which keeps the held base only for the same model and quantization
(trainables/base_cache.py). A trial on a new worker or after a change of base pays the base's load
seconds (its own recorded fresh load, or the grid's median for that base), one after the same base pays
none (`setup_on`); records without `phases` keep their recorded setup.

"Found" means what a user gets back: the sweep returns the best *completed* trial (a stopped
trial's adapter is half-trained; `runner._best` picks it only if nothing completed), so a run has
found a config within `tol` of the grid's best once a completed trial's final eval loss is at most
(1 + tol) x the grid's best final eval loss. Best-so-far is the best completed trial's eval loss.
Each replay seed i uses the recorded training seed `seeds[i % len(seeds)]` for every trial (the grid,
its best and its cost are those of that training seed) and `search.seed = i`.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from evaluation.errors import ConfigError
from sweep.config import SweepConfig
from sweep.dedup import config_key
from sweep.search import scheduler as build_scheduler
from sweep.search import searcher as build_searcher
from sweep.space import tune_space
from sweep.width import at_width
from trainables.config import validate

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)


@dataclass
class Grid:
    records: list[dict]
    meta: dict
    name: str = "grid"

    @property
    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.records})

    def of_seed(self, seed: int) -> list[dict]:
        return [r for r in self.records if r["seed"] == seed]

    def sweep_config(self, **search: Any) -> SweepConfig:
        """The meta's base sections and space, plus `search` settings (dotted into `search`)."""
        base = json.loads(json.dumps(self.meta.get("base", {})))
        base["search"] = {**base.get("search", {}), "space": self.meta["space"], **search}
        return validate(SweepConfig, base)

    def restrict(self, space: dict[str, dict[str, list]]) -> Grid:
        """The grid inside a sub-space of its own (the same paths, some of their values): replays an
        example sweep whose space is smaller than the recorded one (quickstart-gpu: r without 4)."""
        mine = self.meta["space"]
        if set(space) != set(mine):
            raise ConfigError("search.space", sorted(space), f"the recorded grid's paths: {sorted(mine)}")
        for path, dom in space.items():
            values = dom.get("choice")
            if values is None or any(v not in mine[path]["choice"] for v in values):
                raise ConfigError(f"search.space.{path}", dom, f"a choice among {mine[path]['choice']}")
        records = [r for r in self.records if all(r["config"][p] in space[p]["choice"] for p in space)]
        return Grid(records, {**self.meta, "space": space}, self.name)


def load_grid(path: str | Path) -> Grid:
    """NAME.jsonl and its NAME.meta.json."""
    path = Path(path)
    meta_path = path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")
    if not path.is_file() or not meta_path.is_file():
        raise ConfigError("grid", str(path), "a NAME.jsonl grid file with NAME.meta.json next to it")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in records:  # a step-0 point is the base model's eval: reported inside every report, not as one
        r["curve"] = [p for p in r["curve"] if p["step"] > 0]
    return Grid(records, json.loads(meta_path.read_text()), path.name.removesuffix(".jsonl"))


def write_grid(grid: Grid, path: str | Path) -> None:
    """The inverse of `load_grid`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in grid.records))
    path.with_name(path.name.removesuffix(".jsonl") + ".meta.json").write_text(
        json.dumps(grid.meta, indent=1) + "\n"
    )


@dataclass
class _Trial:
    trial_id: str  # what ASHA keys its rungs by
    record: dict
    start: float
    setup: float | None = None  # seconds of setup on its worker (None: as recorded)
    end: float | None = None
    reports: int = 0


@dataclass
class Run:
    """One replayed sweep. Costs are in trial-seconds; `curve` is (cost, best-so-far) at each completion."""

    trials: list[_Trial]
    grid_best: float
    grid_cost: float
    cost_to_target: float | None
    curve: list[tuple[float, float]] = field(default_factory=list)
    total_cost: float = 0.0
    wall: float = 0.0  # seconds from the sweep's start to its last event (the recorder's seconds)
    wall_to_target: float | None = None  # seconds from the start to the completion that found it
    search: dict | None = None

    def configs(self) -> list[dict]:
        return [t.record["config"] for t in self.trials]


def _times(record: dict, setup: float | None = None) -> list[float]:
    """Seconds after the trial's start at which each eval point is reported (`setup`: the trial's
    setup seconds on its worker, default as recorded)."""
    curve, shift = record["curve"], 0.0 if setup is None else setup - record["setup_s"]
    times = [record["setup_s"] + shift + p["train_s"] for p in curve]
    times[-1] = max(times[-1], record["final_s"] + shift)
    return times


def base_key(record: dict) -> tuple:
    """What a worker's held base model depends on (trainables/base_cache.py): model and quantization."""
    return tuple(
        sorted((k, v) for k, v in record["config"].items() if k.split(".")[0] in ("model", "quantization"))
    )


def fresh_loads(grid: Grid) -> dict[tuple, float]:
    """Median seconds to load and quantize each base where the recorder loaded it afresh."""
    loads: dict[tuple, list[float]] = {}
    for r in grid.records:
        if "phases" in r and not r.get("base_reused", True):
            loads.setdefault(base_key(r), []).append(r["phases"]["phase_load_s"])
    return {k: sorted(v)[len(v) // 2] for k, v in loads.items()}


def setup_on(record: dict, held: tuple | None, loads: dict[tuple, float]) -> float:
    """A trial's setup seconds on a worker holding base `held` (None: a new worker). Tune hands a
    finished trial's worker to the next trial (reuse_actors) and the base is reused when it matches,
    so the recorded setup is corrected by the load seconds: none on a match, else the record's own
    fresh load (or the grid's median for that base). Records without phases: as recorded."""
    if "phases" not in record or "base_reused" not in record:
        return record["setup_s"]
    own = record["phases"]["phase_load_s"]
    key = base_key(record)
    if key == held:
        return record["setup_s"] - own
    fresh = own if not record["base_reused"] else loads.get(key, own)
    return record["setup_s"] - own + fresh


def _result(trial: _Trial, i: int, seconds: float) -> dict:
    point, last = trial.record["curve"][i], i == len(trial.record["curve"]) - 1
    return {
        "eval_loss": point["eval_loss"],
        "training_iteration": i + 1,
        "step": point["step"],
        "total_steps": trial.record["total_steps"],
        "done": last,
        "elapsed_s": seconds,
        "gpu_seconds": seconds,
    }


def simulate(
    cfg: SweepConfig,
    grid: Grid,
    seed: int,
    searcher: Searcher,
    scheduler: TrialScheduler | None,
    tol: float = 0.01,
    stop_when_found: bool = False,
) -> Run:
    """Run one sweep of `cfg` against the grid's curves of training seed `seed` (see the module docstring)."""
    space = tune_space(cfg.search.space)
    searcher.set_search_properties(None, None, space)
    dists = OptunaSearch.convert_search_space(space)
    records = {config_key(dists, r["config"]): r for r in grid.of_seed(seed)}
    finals = [r["curve"][-1]["eval_loss"] for r in records.values()]
    run = Run([], min(finals), sum(r["final_s"] for r in records.values()), None)
    events: list[tuple[float, int, _Trial]] = []
    running: dict[str, _Trial] = {}
    calls, done_searching, best, now = 0, False, float("inf"), 0.0
    loads, idle = fresh_loads(grid), []  # idle: the base each finished trial's worker holds

    def cost_at(t: float) -> float:
        return sum(min(t, tr.end if tr.end is not None else t) - tr.start for tr in run.trials)

    def fill(now: float) -> None:
        nonlocal calls, done_searching
        while (
            not done_searching
            and len(running) < cfg.search.max_concurrent_trials
            and len(run.trials) < cfg.search.num_samples
        ):
            calls += 1
            config = searcher.suggest(f"trial{calls:05d}")
            if config is None:
                return  # waits for a running trial (dedup) or for capacity
            if config == Searcher.FINISHED:
                done_searching = True
                return
            key = config_key(dists, config)
            if key not in records:
                raise ConfigError("grid", config, f"a config recorded in {grid.name} for seed {seed}")
            held = idle.pop() if idle else None  # Tune reuses a finished trial's worker, else starts one
            trial = _Trial(f"trial{calls:05d}", records[key], now, setup_on(records[key], held, loads))
            run.trials.append(trial)
            running[trial.trial_id] = trial
            if scheduler:
                scheduler.on_trial_add(None, trial)
            heapq.heappush(events, (now + _times(trial.record, trial.setup)[0], calls, trial))

    fill(0.0)
    while events:
        now, order, trial = heapq.heappop(events)
        i, trial.reports = trial.reports, trial.reports + 1
        result = _result(trial, i, now - trial.start)
        action = scheduler.on_trial_result(None, trial, result) if scheduler else TrialScheduler.CONTINUE
        if action == TrialScheduler.STOP or result["done"]:
            if scheduler:
                scheduler.on_trial_complete(None, trial, result)
            searcher.on_trial_complete(trial.trial_id, result=result)
            trial.end = now
            del running[trial.trial_id]
            idle.append(base_key(trial.record))
            if result["done"] and result["eval_loss"] < best:
                best = result["eval_loss"]
                run.curve.append((cost_at(now), best))
                if run.cost_to_target is None and best <= (1 + tol) * run.grid_best:
                    run.cost_to_target, run.wall_to_target = run.curve[-1][0], now
                    if stop_when_found:
                        break
        else:
            searcher.on_trial_result(trial.trial_id, result)
            heapq.heappush(events, (trial.start + _times(trial.record, trial.setup)[i + 1], order, trial))
        fill(now)
    run.total_cost = cost_at(now if events else float("inf"))
    run.wall = now
    run.search = searcher.stats() if hasattr(searcher, "stats") else None
    return run


STRATEGIES = ("defaults", "tpe-no-asha", "random", "grid")


def grid_points(space: dict[str, dict[str, list]]) -> list[dict]:
    """Every config of an all-choice space in for-loop order (the first path varies slowest)."""
    if any(next(iter(d)) != "choice" for d in space.values()):
        raise ConfigError("search.space", space, "only choice domains for the grid strategy")
    return [dict(zip(space, values)) for values in itertools.product(*(d["choice"] for d in space.values()))]


def replay(
    grid: Grid, strategy: str, index: int, tol: float = 0.01, stop_when_found: bool = False, **search: Any
) -> Run:
    """Replay seed `index` of a strategy. `search` overrides the sweep's search settings (e.g.
    n_startup_trials, num_samples, scheduler); the default num_samples is the whole grid.

    defaults: `searcher(cfg)` + `scheduler(cfg)` exactly as a sweep builds them (TPE, ASHA, dedup).
    tpe-no-asha: the same searcher, every trial trained to the end.
    random: Optuna's RandomSampler behind the same dedup wrapper (random order, no repeats), no ASHA.
    grid: every config in for-loop order (as initial points), no ASHA: the plain loop a user writes.
    """
    if strategy not in STRATEGIES:
        raise ConfigError("strategy", strategy, f"one of {', '.join(STRATEGIES)}")
    seed = grid.seeds[index % len(grid.seeds)]
    search = {"num_samples": len(grid.of_seed(seed)), **search, "seed": index}
    if strategy != "defaults":
        search["scheduler"] = {"type": "none"}
    if strategy == "grid":
        search["initial_points"] = grid_points(grid.meta["space"])
    cfg = grid.sweep_config(**search)
    cfg = at_width(cfg, cfg.search.max_concurrent_trials)  # as the runner resolves it (sweep/width.py)
    sampler = optuna.samplers.RandomSampler(seed=index) if strategy == "random" else None
    reports = max(len(r["curve"]) for r in grid.records)
    return simulate(
        cfg, grid, seed, build_searcher(cfg, sampler), build_scheduler(cfg, reports), tol, stop_when_found
    )


def synthetic_grid(
    space: dict[str, dict[str, list]], seeds: tuple[int, ...] = (1, 2), steps: int = 30, every: int = 5
) -> Grid:
    """A deterministic stand-in grid in the recorded format, for tests and for trying the replay
    without a GPU: each value of each path adds its own amount to the final eval loss (plus a per-config
    interaction and a small per-seed jitter), configs converge at different speeds (so early ranks can
    mislead ASHA) and cost different seconds per step."""
    records = []
    for values in itertools.product(*(d["choice"] for d in space.values())):
        config = dict(zip(space, values))
        tag = json.dumps(config, sort_keys=True)
        final = 2.2 + sum(random.Random(f"{p}={v}").uniform(0, 0.3) for p, v in config.items())
        final += random.Random(f"mix {tag}").uniform(0, 0.15)
        speed, per_step = (
            0.5 + random.Random(f"speed {tag}").random(),
            0.3 + 0.3 * random.Random(f"cost {tag}").random(),
        )
        for seed in seeds:
            end = final + random.Random(f"{seed} {tag}").gauss(0, 0.01)
            curve = [
                {
                    "step": s,
                    "eval_loss": round(end + 1.5 * math.exp(-3 * speed * s / steps), 5),
                    "train_s": round(per_step * s + 0.2 * (s // every), 3),
                }
                for s in range(every, steps + 1, every)
            ]
            records.append(
                {
                    "config": config,
                    "seed": seed,
                    "base_eval_loss": 3.7,
                    "setup_s": 4.0,
                    "total_steps": steps,
                    "curve": curve,
                    "final_s": round(4.0 + curve[-1]["train_s"] + 2.0, 3),
                }
            )
    meta = {
        "space": space,
        "base": {"model": {"path": "smollm2-135m"}, "training": {"max_steps": steps, "eval_interval": every}},
        "command": "sweep.replay.synthetic_grid",
        "device": "none (synthetic)",
    }
    return Grid(records, meta, "synthetic")
