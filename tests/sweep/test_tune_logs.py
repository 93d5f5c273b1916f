"""A trial that Tune restarts from its checkpoint keeps, in its result.json, the rows it reported
before the restart, however slowly the storage is written (sweep/tune_logs.py)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs
import pytest
import ray
from fsspec.implementations.local import LocalFileSystem
from ray import cloudpickle, tune

from sweep.tune_logs import JsonLogger

pytestmark = pytest.mark.slow
SLOW_S = 2.0


class SlowResultWrites(pyarrow.fs.FSSpecHandler):
    """Local storage that truncates a result.json at once and writes its bytes SLOW_S later, as a
    loaded machine or a network filesystem may: Tune's background copy of the driver's files is then
    mid-write most of the time, so also when the restarted trial's logger reads the file back (with
    Tune's own JsonLoggerCallback, the rows of steps 1 and 2 were lost in 4 runs of 4)."""

    def open_output_stream(self, path, metadata):
        stream = super().open_output_stream(path, metadata)
        if path.endswith("result.json"):
            time.sleep(SLOW_S)
        return stream


def trainable(config):
    """Four steps, each reported with a checkpoint; the first run fails after step 2 (its node lost)."""
    ckpt = tune.get_checkpoint()
    start = 0
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = int(Path(d, "step").read_text())
    for step in range(start + 1, 5):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "step").write_text(str(step))
            tune.report(
                {"step": step, "restarted": ckpt is not None}, checkpoint=tune.Checkpoint.from_directory(d)
            )
        if step == 2 and ckpt is None:
            raise RuntimeError("node lost")


def test_a_restarted_trial_keeps_the_rows_it_reported_before_the_restart(tmp_path, monkeypatch):
    # As in a sweep (sweep/resume.py), Tune copies the driver's files to storage after every step.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the trial's actor unpickles the storage
    storage = pyarrow.fs.PyFileSystem(SlowResultWrites(LocalFileSystem()))
    tuner = tune.Tuner(
        trainable,
        run_config=tune.RunConfig(
            name="restart",
            storage_path=str(tmp_path),
            storage_filesystem=storage,
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[JsonLogger()],
            verbose=0,
        ),
    )
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        (result,) = tuner.fit()
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert result.error is None
    rows = [json.loads(line) for line in Path(result.path, "result.json").read_text().splitlines()]
    assert [(r["restarted"], r["step"]) for r in rows] == [(False, 1), (False, 2), (True, 3), (True, 4)]
