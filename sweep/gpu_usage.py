"""GPU utilisation while a trial runs, for the report's timeline: is the GPU busy, or waiting on the
trial's fixed costs? `nvidia-smi` is asked once a second in a daemon thread for the trial's own GPUs;
each report carries the mean since the last one as `gpu_util` (percent), so MLflow holds one value per
evaluation, beside that report's `wall_time`. Nothing is sampled without a GPU or without nvidia-smi.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence

EVERY_S = 1.0


def sample(gpu_ids: Sequence[int | str]) -> float | None:
    """The mean utilisation (percent) of these GPUs now, by their physical index; None if unknown."""
    cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(
            [*cmd, "-i", ",".join(map(str, gpu_ids))], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        values = [float(line) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return sum(values) / len(values) if values else None


class GpuSampler:
    """Samples in the background while open; `mean()` takes the samples since its last call."""

    def __init__(self, gpu_ids: Sequence[int | str], every_s: float = EVERY_S):
        self.gpu_ids, self.every_s = list(gpu_ids), every_s
        self._samples: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            value = sample(self.gpu_ids)
            if value is None:
                return  # no nvidia-smi answer: the report draws no utilisation for this trial
            with self._lock:
                self._samples.append(value)

    def mean(self) -> float | None:
        with self._lock:
            samples, self._samples = self._samples, []
        return sum(samples) / len(samples) if samples else None

    @contextlib.contextmanager
    def running(self) -> Iterator[GpuSampler]:
        """Sampling for as long as the trial runs (a reused worker starts afresh for its next trial)."""
        if self.gpu_ids and shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._loop, name="gpu-usage", daemon=True)
            self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
