"""Where a trial's reports and checkpoints go: a printer for `qlora-sweep train`, Ray for sweeps.

The trainable only sees this small interface, so one code path serves a plain run, a Ray Tune
trial and a Ray Train worker (the Ray reporters live in `sweep/`, which knows about Ray).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

from trainables.checkpoint import latest, prune


class Reporter(Protocol):
    def restore_dir(self) -> Path | None:
        """A checkpoint to resume from, or None to start fresh."""

    def checkpoint_dir(self, step: int) -> Path:
        """An empty directory to write the checkpoint of `step` into."""

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        """Publish metrics (and hand over the checkpoint written into `checkpoint_dir`)."""


class PrintReporter:
    """Prints one line per report and keeps the newest checkpoints under `output_dir/checkpoints`."""

    KEYS = ("step", "train_loss", "eval_loss", "perplexity", "tokens_per_s", "peak_mem_gb", "elapsed_s")

    def __init__(self, output_dir: str | Path | None = None, keep: int = 2, resume: bool = True, echo=print):
        self.root = Path(output_dir or tempfile.mkdtemp(prefix="qlora-trial-"))
        self.ckpts = self.root / "checkpoints"
        self.keep, self.resume, self.echo = keep, resume, echo
        self.history: list[dict] = []

    def restore_dir(self) -> Path | None:
        return latest(self.ckpts) if self.resume else None

    def checkpoint_dir(self, step: int) -> Path:
        return self.ckpts / f"step-{step:07d}"

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        self.history.append(metrics)
        if checkpoint is not None:
            prune(self.ckpts, self.keep)
        shown = "  ".join(
            f"{k}={metrics[k]:.4g}" for k in self.KEYS if isinstance(metrics.get(k), (int, float))
        )
        self.echo(shown)
