"""The search settings a sweep uses at its width (trials at once), chosen on the recorded curves.

`qlora-sweep run` / `submit` (sweep/runner.py) and the replay (sweep/replay.py) both resolve the
search section through `at_width`, fed the concurrency the runner will use, so a sweep runs the
settings its width was measured with, and `plan` prints them. A setting the user wrote (non-null in
the YAML) always wins: these fill only the ones left null.

Why (benchmarks/RESULTS.md, issue 28, replays of the recorded SmolLM2 grid): from 8 at once on, the
first wave of trials starts before any result exists, so it is random for any searcher, and it decides
most sweeps (8 random configs of this grid hold one within 1% of the best 47% of the time, 32 hold one
95%). TPE's constant liar (off: within 4 s of on), n_startup_trials 8 (no better than 2), ASHA's grace
period 2 (no better than 1) did not beat the shipped settings at 2, 8 or 32 at once; ASHA's reduction
factor 4 was 1-4 s faster on average at 1-8 at once (paired over 200 seeds, medians unchanged), the
same at every width, so it is no width default. What the width does change is how many trials a
sweep needs to end holding a config within 1% of the best: num_samples / width waves, of which only
the ones after the first are guided by results.
"""

from __future__ import annotations

from sweep.config import SweepConfig

# The seeds (of 100 per cell) whose whole default sweep ended within 1% of the grid's best, by width
# and num_samples: benchmarks/runs/replay-width/samples.md. 8 trials (the old default): 54-75%.
WHY = (
    "  why: num_samples is the fewest trials whose whole sweeps ended within 1% of the best in >= 99 of\n"
    "  100 replays of the recorded grid at 1-32 at once (8 trials: 54-75%; past 32, two waves, not\n"
    "  measured); TPE's and ASHA's other settings did not gain with width (benchmarks/RESULTS.md, issue 28)"
)


def default_num_samples(width: int) -> int:
    """16 trials up to 2 at once, then 24 or two waves of trials, whichever is more."""
    return 16 if width <= 2 else max(24, 2 * width)


def width_search(width: int) -> dict:
    """The default search settings at `width` trials at once (SearchConfig fields)."""
    return {"num_samples": default_num_samples(max(1, width)), "constant_liar": True}


def at_width(cfg: SweepConfig, width: int) -> SweepConfig:
    """`cfg` with its null search settings filled for `width` trials at once."""
    s = cfg.search
    fill = {k: v for k, v in width_search(width).items() if getattr(s, k) is None}
    return cfg.model_copy(update={"search": s.model_copy(update=fill)}) if fill else cfg


def for_cluster(cfg: SweepConfig, resources: dict | None = None) -> SweepConfig:
    """What `run` / `submit` run: the null settings filled at the concurrency the runner will use
    (search.max_concurrent_trials, capped at what a local Ray instance fits for a trial's `resources`;
    under `submit` the cluster may autoscale, so the YAML's)."""
    from sweep.placement import concurrent_trials  # placement imports plan, which imports this module

    return at_width(cfg, concurrent_trials(cfg, resources))


def explain(cfg: SweepConfig, width: int) -> str:
    """For `plan`: the search settings at this width, which came from the width, and why."""
    resolved = at_width(cfg, width).search
    parts = [
        f"{k} {getattr(resolved, k)}" + (" (yours)" if getattr(cfg.search, k) is not None else "")
        for k in width_search(width)
    ]
    return f"search at {width} at once (run caps it at what the cluster fits): {', '.join(parts)}\n{WHY}"
