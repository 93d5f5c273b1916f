"""The report's "Where the time went": the timeline (sweep/report_timeline.py), per-phase seconds of
the sweep's trials, the share spent training, when the best result was first known (time-to-best,
what a user waits for), and the cost line of the summary.

Reads only the metrics every trial reports (trainables/phases.py) from its MLflow run.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

from sweep import human
from sweep.report_timeline import bars, timeline_plot, utilisation
from trainables.phases import PHASES


def _num(t, key: str) -> float:
    v = t.metrics.get(key)
    return v if isinstance(v, (int, float)) and math.isfinite(v) else 0.0


def best_at_s(best, sweep_start_ms: int | None) -> float | None:
    """Seconds from the sweep's start to the best trial's last report (when its result was known)."""
    if best is None or not sweep_start_ms or not _num(best, "wall_time"):
        return None
    return _num(best, "wall_time") - sweep_start_ms / 1000


def time_blocks(
    trials: list, best, sweep_start_ms: int | None, out: Path | None = None, looks: dict | None = None
) -> list[tuple]:
    """Blocks for the report (`h2`, `ul`, `img`, `table`); none when no trial reported phase timings.
    The timeline is drawn when `out` (where its PNG goes) and the trials' `looks` are given."""
    timed = [t for t in trials if "phase_train_s" in t.metrics]
    if not timed:
        return []
    totals = {name: sum(_num(t, f"phase_{name}_s") for t in timed) for name in PHASES}
    whole = sum(totals.values()) or 1.0
    rows = [
        [
            name,
            human.duration(totals[name]),
            f"{100 * totals[name] / whole:.1f}%",
            human.duration(statistics.median(_num(t, f"phase_{name}_s") for t in timed)),
        ]
        for name in PHASES
        if totals[name] >= 0.05  # a phase no trial had (no judge configured) is no row of zeros
    ]
    items = [
        f"Training (steady steps) took {100 * totals['train'] / whole:.0f}% of the trials' "
        f"{human.duration(whole)}; the rest is each trial's fixed cost (loading, the first step with any "
        "compilation, evaluations, generation, checkpoints)."
    ]
    fresh = [_num(t, "fixed_s") for t in timed if not t.metrics.get("base_reused")]
    reused = [_num(t, "fixed_s") for t in timed if t.metrics.get("base_reused")]
    if fresh:
        items.append(
            f"Fixed cost per trial (median): {human.duration(statistics.median(fresh))} on a new worker"
            + (
                f", {human.duration(statistics.median(reused))} on a reused one ({len(reused)} trial{'s' if len(reused) > 1 else ''})."
                if reused
                else "; no trial reused a worker."
            )
        )
    at = best_at_s(best, sweep_start_ms)
    if at is not None:
        items.append(
            f"Time to best: the best trial's result was known {human.duration(at)} after the sweep started."
        )
    blocks: list[tuple] = [("h2", "Where the time went"), ("ul", items)]
    if out is not None and looks is not None and sweep_start_ms:
        fates = {label: look.fate for label, look in looks.items()}
        util, drawn = utilisation(trials, sweep_start_ms), bars(trials, sweep_start_ms, fates)
        path = timeline_plot(drawn, looks, at, out / "timeline.png", util)
        if drawn:
            lanes, span = len({b.lane for b in drawn}), max(b.end_s for b in drawn)
            busy = sum(b.wall_s for b in drawn) / (lanes * span)
            items.append(
                f"Packing: {lanes} worker{'s' if lanes > 1 else ''} ran the {len(drawn)} trials and were busy "
                f"{100 * busy:.0f}% of the {human.duration(span)} from the sweep's start to its last trial's end "
                "(the rest: Ray starting workers, the gap between one trial and the next)."
            )
        if path is not None:
            blocks.append(
                ("img", path, "Timeline: one lane per worker, each trial's bar split into its phases")
            )
    blocks.append(("table", ["phase", "time (all trials)", "share", "median per trial"], rows))
    return blocks


def cost_sentence(trials: list, sweep_start_ms: int | None, sweep_end_ms: int | None) -> str:
    """The summary's cost line, one sentence: wall time, training time, and GPU (or CPU) time."""
    wall = ((sweep_end_ms or int(time.time() * 1000)) - sweep_start_ms) / 1000 if sweep_start_ms else None
    busy = sum(_num(t, "elapsed_s") for t in trials)
    billed = sum(_num(t, "gpu_seconds") for t in trials)
    text = f"Cost: {len(trials)} trials in {human.duration(wall)} of wall time; they trained for {human.duration(busy)}"
    if any("gpu_index" in t.metrics for t in trials):
        return text + f" in all, {human.duration(billed)} of GPU time at each trial's share of its GPU."
    if any("worker_pid" in t.metrics for t in trials):  # reported by every trial since the timeline
        same = abs(billed - busy) <= 0.01 * max(busy, 1e-9)
        return (
            text
            + " in all, on CPUs only"
            + ("." if same else f" ({human.duration(billed)} of CPU-core time).")
        )
    return text + f" in all ({human.duration(billed)} of GPU time, or CPU-core time where no GPU was used)."
