"""The report's "Where the time went": per-phase seconds of the sweep's trials, the share spent
training, and when the best result was first known (time-to-best, what a user waits for).

Reads only the metrics every trial reports (trainables/phases.py) from its MLflow run.
"""

from __future__ import annotations

import math
import statistics

from trainables.phases import PHASES


def _num(t, key: str) -> float:
    v = t.metrics.get(key)
    return v if isinstance(v, (int, float)) and math.isfinite(v) else 0.0


def time_blocks(trials: list, best, sweep_start_ms: int | None) -> list[tuple]:
    """Blocks for the report (`h2`, `ul`, `table`); none when no trial reported phase timings."""
    timed = [t for t in trials if "phase_train_s" in t.metrics]
    if not timed:
        return []
    totals = {name: sum(_num(t, f"phase_{name}_s") for t in timed) for name in PHASES}
    whole = sum(totals.values()) or 1.0
    rows = [
        [
            name,
            f"{totals[name]:,.1f}",
            f"{100 * totals[name] / whole:.1f}%",
            f"{statistics.median(_num(t, f'phase_{name}_s') for t in timed):,.2f}",
        ]
        for name in PHASES
    ]
    items = [
        f"Training (steady steps): {100 * totals['train'] / whole:.0f}% of the trials' {whole:,.0f} s; "
        f"the rest is each trial's fixed cost (load, compile in the first step, evaluations, generation, "
        f"checkpoints)."
    ]
    fresh = [_num(t, "fixed_s") for t in timed if not t.metrics.get("base_reused")]
    reused = [_num(t, "fixed_s") for t in timed if t.metrics.get("base_reused")]
    if fresh:
        items.append(
            f"Fixed cost per trial (median): {statistics.median(fresh):.1f} s on a new worker"
            + (
                f", {statistics.median(reused):.1f} s on a reused one ({len(reused)} trials)"
                if reused
                else "; no trial reused a worker"
            )
        )
    if best is not None and sweep_start_ms and _num(best, "wall_time"):
        at = _num(best, "wall_time") - sweep_start_ms / 1000
        items.append(
            f"Time to best: the best trial's result was known {at / 60:,.1f} min after the sweep started."
        )
    return [
        ("h2", "Where the time went"),
        ("ul", items),
        ("table", ["phase", "seconds (all trials)", "share", "median per trial (s)"], rows),
    ]
