"""The report's timeline: when each trial ran and on which worker (one lane per worker process,
labelled with its GPU), each trial a bar split into its phases, stopped and failed trials marked, and
the moment the best result was known. The picture that shows the packing and the idle gaps, which a
user needs to trust `gpu: auto` and to size a cluster.

Built from each trial's last reported metrics: `wall_time` (when it reported), `trial_wall_s` (how long
the trial had been running then), `phase_<name>_s` (trainables/phases.py), and `worker_pid` /
`gpu_index` (sweep/tune_reporter.py). A trial that never reported is drawn from its MLflow run's start
and end; without `worker_pid` (older sweeps, Ray Train trials) bars are packed into as few lanes as
run at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, MultipleLocator  # noqa: E402

from sweep.report_plots import Look  # noqa: E402
from trainables.phases import PHASES  # noqa: E402

# What a person tells apart on a bar: phases grouped, in the order a trial runs them, with colours
# that are not the trials' own (those outline the bars).
GROUPS = (
    ("load", ("data", "load", "lora"), "#bdbdbd"),
    ("base eval", ("base_eval",), "#9ecae1"),
    ("waiting to compile", ("compile_wait",), "#fee6ce"),
    ("first step (compile)", ("first_step",), "#fdae6b"),
    ("train", ("train",), "#74c476"),
    ("eval", ("eval",), "#6baed6"),
    ("generation", ("generation",), "#c994c7"),
    ("judge", ("judge",), "#fdd0a2"),
    ("checkpoint, report", ("checkpoint", "report"), "#969696"),
)
OTHER = ("other", tuple(p for p in PHASES if not any(p in names for _, names, _ in GROUPS)), "#e7e7e7")


@dataclass
class Bar:
    label: str
    start_s: float  # since the sweep started
    wall_s: float  # the trial's wall-clock time (to its last report)
    segments: list[tuple[str, float]]  # (group, seconds), in running order, empty ones left out
    fate: str = "completed"
    worker: tuple | None = None  # (gpu_index, pid) when the trial reported them
    lane: str = field(default="")

    @property
    def end_s(self) -> float:
        return self.start_s + self.wall_s


def _num(metrics: dict, key: str) -> float | None:
    v = metrics.get(key)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def bars(trials: list, sweep_start_ms: int, fates: dict[str, str]) -> list[Bar]:
    """One bar per trial that ran (in start order), lanes assigned."""
    out = []
    for t in trials:
        m = t.metrics
        reported, wall = _num(m, "wall_time"), _num(m, "trial_wall_s")
        if reported is not None and wall is not None:
            start = reported - wall
            if t.end_ms and fates.get(t.label) == "failed":  # it failed after its last report
                wall = max(wall, t.end_ms / 1000 - start)
        elif t.start_ms and t.end_ms:
            start, wall = t.start_ms / 1000, (t.end_ms - t.start_ms) / 1000
        else:
            continue  # still running and never reported: nothing to draw yet
        segments = []
        for name, phases, _ in (*GROUPS, OTHER):
            seconds = sum(_num(m, f"phase_{p}_s") or 0.0 for p in phases)
            if seconds > 0:
                segments.append((name, seconds))
        pid = _num(m, "worker_pid")
        worker = (_num(m, "gpu_index"), int(pid)) if pid is not None else None
        out.append(
            Bar(
                t.label,
                start - sweep_start_ms / 1000,
                wall,
                segments,
                fates.get(t.label, "completed"),
                worker,
            )
        )
    out.sort(key=lambda b: b.start_s)
    _assign_lanes(out)
    return out


def _assign_lanes(bars_: list[Bar]) -> None:
    """A lane per worker process ("GPU 0 · worker 2"), the workers of one GPU side by side; bars
    without a worker go to the first free lane."""
    first_use = list(dict.fromkeys(b.worker for b in bars_ if b.worker is not None))
    by_gpu = sorted(first_use, key=lambda w: (w[0] is None, w[0] or 0))  # stable: first use within a GPU
    names = {w: f"{'CPU' if w[0] is None else f'GPU {w[0]:g}'} · worker {i}" for i, w in enumerate(by_gpu, 1)}
    free_at: dict[str, float] = {}
    for b in bars_:
        if b.worker is not None:
            b.lane = names[b.worker]
        else:
            lane = next((name for name, t in free_at.items() if t <= b.start_s + 1e-6), None)
            b.lane = lane or f"slot {len(free_at) + 1}"
        free_at[b.lane] = b.end_s


def utilisation(trials: list, sweep_start_ms: int) -> dict[str, list[tuple[float, float]]]:
    """ "GPU 0" -> [(seconds since the sweep started, percent busy)], from the reports that carried
    `gpu_util` (the mean since the trial's previous report), at those reports' `wall_time`."""
    out: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        gpu, when = _num(t.metrics, "gpu_index"), dict(t.history.get("wall_time", []))
        for step, util in t.history.get("gpu_util", []):
            if gpu is not None and step in when:
                out.setdefault(f"GPU {gpu:g}", []).append((when[step] - sweep_start_ms / 1000, util))
    return {gpu: sorted(points) for gpu, points in sorted(out.items())}


def _clock(seconds: float, _pos=None) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def timeline_plot(
    bars_: list[Bar], looks: dict[str, Look], best_at_s: float | None, path: Path, util: dict | None = None
) -> Path | None:
    """The figure: lanes top to bottom in order of first use, time since the sweep started across;
    under it, where it was sampled, each GPU's utilisation."""
    if not bars_:
        return None
    lanes = sorted(dict.fromkeys(b.lane for b in bars_), key=lambda lane: int(lane.rsplit(" ", 1)[1]))
    height = 1.6 + 0.7 * len(lanes)
    if util:
        fig, (ax, low) = plt.subplots(2, 1, figsize=(8.5, height + 1.6), sharex=True,
                                      gridspec_kw={"height_ratios": [height, 1.4]})  # fmt: skip
        began = {}  # each value is the mean since the previous report: the first, since the first trial began
        for b in bars_:
            if b.worker is not None and b.worker[0] is not None:
                gpu = f"GPU {b.worker[0]:g}"
                began[gpu] = min(began.get(gpu, b.start_s), b.start_s)
        for gpu, points in util.items():
            low.step(
                *zip(*[(began.get(gpu, 0.0), points[0][1]), *points], strict=True), where="pre", label=gpu
            )
        low.set_ylim(0, 105)
        low.set_ylabel("GPU busy %")
        low.grid(alpha=0.3)
        low.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        fig, ax = plt.subplots(figsize=(8.5, height))
        low = ax
    colours = {name: colour for name, _, colour in (*GROUPS, OTHER)}
    for b in bars_:
        y = len(lanes) - 1 - lanes.index(b.lane)
        x = b.start_s
        for name, seconds in b.segments:
            ax.broken_barh([(x, seconds)], (y - 0.3, 0.6), facecolors=colours[name], edgecolor="none")
            x += seconds
        look = looks.get(b.label)
        edge = look.colour if look else "black"
        ax.add_patch(Rectangle((b.start_s, y - 0.3), b.wall_s, 0.6, fill=False, edgecolor=edge,
                               linewidth=3 if b.fate == "best" else 1.6, zorder=4))  # fmt: skip
        ax.text(b.start_s + b.wall_s / 2, y + 0.36, b.label, ha="center", va="bottom", fontsize=7, color=edge)
        marker = {"stopped": ("X", "#444444"), "failed": ("s", "#d62728"), "best": ("*", "gold")}.get(b.fate)
        if marker:
            ax.plot(b.end_s, y, marker[0], color=marker[1], markersize=14 if b.fate == "best" else 9,
                    markeredgecolor="black", markeredgewidth=0.7, zorder=6)  # fmt: skip
    if best_at_s is not None:
        ax.axvline(best_at_s, color="black", linestyle="--", linewidth=1, zorder=5)
        ax.annotate(f"best result known at {_clock(best_at_s)} ", (best_at_s, -0.55), ha="right", va="bottom",
                    fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})  # fmt: skip
    ax.set_yticks(range(len(lanes)), lanes[::-1])
    ax.set_ylim(-0.6, len(lanes) - 0.1)
    ax.set_xlim(0, max(b.end_s for b in bars_) * 1.02)
    span = max(b.end_s for b in bars_)
    step = next((s for s in (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if span / s <= 10), 7200)
    low.xaxis.set_major_locator(MultipleLocator(step))  # whole minutes, halves, ...: not 0:50, 1:40
    low.xaxis.set_major_formatter(FuncFormatter(_clock))
    low.set_xlabel("time since the sweep started (min:s)")
    ax.set_title("When each trial ran, on which worker, and where its time went")
    ax.grid(axis="x", alpha=0.3)
    used = {name for b in bars_ for name, seconds in b.segments if seconds >= 0.1}  # no legend for a sliver
    handles = [Patch(facecolor=c, label=n) for n, _, c in (*GROUPS, OTHER) if n in used]
    fates = {b.fate for b in bars_}
    handles += [
        plt.Line2D([], [], marker=m, color=c, linestyle="", markeredgecolor="black", markersize=9, label=text)
        for fate, m, c, text in (
            ("best", "*", "gold", "best trial"),
            ("stopped", "X", "#444444", "stopped early (ASHA)"),
            ("failed", "s", "#d62728", "failed or killed"),
        )
        if fate in fates
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
