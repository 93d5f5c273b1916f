"""What this node has measured about its GPU: training rates, compile seconds and memory peaks.

Policies predicted from constants went wrong on the GPU a user has (issue 30: an eager trial peaked at
46 GB where the plan assumed the compiled 23 GB, and compile was refused for a saving it would have
paid back twice). Every trial on a GPU therefore records what it saw here, in the node's cache dir,
and the next trial's plan (trainables/run_plan.py) and `qlora-sweep plan` read it back: a shape's
measured peak replaces its estimate, measured rates replace the built-in ones. One file per GPU model,
small, written under a file lock (trials of one node share it), one per GPU model and base model.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

KEEP = 16  # recent samples kept per figure: a changed driver or library shows within a few trials


@dataclass
class NodeStats:
    """Measured figures of one GPU model on this node (empty where nothing was measured yet)."""

    eager_flops: list[float] = field(default_factory=list)  # FLOP/s of steady eager training
    compiled_flops: list[float] = field(default_factory=list)  # same, compiled
    compile_s: list[float] = field(default_factory=list)  # first step's extra seconds when compiled
    peaks: dict[str, float] = field(default_factory=dict)  # run key -> peak GiB (reserved + context)
    # trials per GPU -> FLOP/s of one compiled trial's steady training while that many shared the GPU
    shared_flops: dict[str, list[float]] = field(default_factory=dict)

    @staticmethod
    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def sharing_gain(self, k: int) -> float | None:
        """What k compiled trials sharing the GPU train together, relative to one alone (k x a shared
        trial's rate / a lone trial's rate), where both were measured: above 1 when one trial alone
        leaves the GPU idle between its kernels, below 1 when time-slicing costs."""
        shared, alone = self.median(self.shared_flops.get(str(k), [])), self.median(self.compiled_flops)
        return k * shared / alone if shared and alone else None


def stats_path(cache: Path, gpu_name: str, model: str) -> Path:
    """One file per GPU model and base model: rates and compile seconds of one model say little about
    another's (a quickstart's SmolLM2 must not decide a 3B trial's compile)."""

    def slug(text: str) -> str:
        return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "x"

    return cache / "node_stats" / slug(gpu_name) / f"{slug(model)}.json"


def load_stats(path: Path) -> NodeStats:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return NodeStats()
    known = NodeStats.__dataclass_fields__
    return NodeStats(**{k: v for k, v in raw.items() if k in known})


def record(path: Path, **samples) -> None:
    """Append figures (`eager_flops=...`, `compiled_flops=...`, `compile_s=...`, `shared_flops={k: flops}`)
    and set peaks (`peaks={key: gb}`; the larger of the old and the new, so a plan never shrinks below
    what ran)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        stats = load_stats(path)
        for name, value in samples.items():
            if name == "peaks":
                for key, gb in value.items():
                    stats.peaks[key] = max(gb, stats.peaks.get(key, 0.0))
            elif name == "shared_flops":
                for k, flops in value.items():
                    kept = stats.shared_flops.setdefault(str(k), [])
                    kept.append(float(flops))
                    del kept[:-KEEP]
            elif value is not None:
                getattr(stats, name).append(float(value))
                del getattr(stats, name)[:-KEEP]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats.__dict__, indent=1))
        tmp.replace(path)
