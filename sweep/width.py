"""The search settings a sweep uses at its width (trials at once), chosen on the recorded curves.

`qlora-sweep run` / `submit` (sweep/runner.py) and the replay (sweep/replay.py) both resolve the
search section through `at_width`, fed the concurrency the runner will use, so a sweep runs the
settings its width was measured with, and `plan` prints them. A setting the user wrote (non-null in
the YAML) always wins: these fill only the ones left null.

Why (benchmarks/RESULTS.md, issue 28, replays of the recorded SmolLM2 grid): from 8 at once on, the
first wave of trials starts before any result exists, so it is random for any searcher, and it decides
most sweeps. TPE's constant liar (on or off), n_startup_trials (2 or 8), ASHA's grace period (1 or 2)
and reduction factor (2 or 4) moved the median wall to 1% by a second or two, within the seeds'
noise, at 2, 8 and 32 at once: they stay as they are at every width. What the width does change is
how many trials a sweep needs to end holding a config within 1% of the best: num_samples / width
waves, and only the waves after the first are guided by results.
"""

from __future__ import annotations

from sweep.config import SweepConfig

# The seeds (of 100 per cell) whose whole default sweep ended within 1% of the grid's best, by width
# and num_samples: benchmarks/runs/replay-width/samples*.md.
WHY_SAMPLES = (
    "num_samples {n}: the fewest trials whose sweeps ended within 1% of the best in >= 99% of replays at "
    "this width (8 trials: 54-75%; a wave of {w} random trials first, then guided ones)"
)


def default_num_samples(width: int) -> int:
    """16 trials up to 2 at once, 24 up to 4, then 32 or two waves, whichever is more."""
    if width <= 2:
        return 16
    if width <= 4:
        return 24
    return max(32, 2 * width)


def width_search(width: int) -> dict:
    """The default search settings at `width` trials at once (SearchConfig fields)."""
    return {"num_samples": default_num_samples(max(1, width)), "constant_liar": True}


def at_width(cfg: SweepConfig, width: int) -> SweepConfig:
    """`cfg` with its null search settings filled for `width` trials at once."""
    s = cfg.search
    fill = {k: v for k, v in width_search(width).items() if getattr(s, k) is None}
    return cfg.model_copy(update={"search": s.model_copy(update=fill)}) if fill else cfg


def explain(cfg: SweepConfig, width: int) -> str:
    """For `plan`: the search settings at this width, which came from the width, and why."""
    chosen = width_search(width)
    resolved = at_width(cfg, width).search
    parts = [
        f"{k} {getattr(resolved, k)}" + (" (yours)" if getattr(cfg.search, k) is not None else "")
        for k in chosen
    ]
    why = WHY_SAMPLES.format(n=chosen["num_samples"], w=width)
    return (
        f"search at {width} at once (run caps it at what the cluster fits): {', '.join(parts)}\n"
        f"  why: {why}; TPE's constant liar, n_startup_trials and ASHA's grace period and reduction "
        "factor did not change the time to 1% at 2-32 at once (benchmarks/RESULTS.md, issue 28)"
    )
