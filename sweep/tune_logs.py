"""Ray Tune's result.json of a trial, kept whole when Tune restarts the trial from its checkpoint.

Tune's JSON logger writes each trial's rows on the driver (a staging directory), and a background
thread copies that directory to the experiment's storage after every Tune step. When a trial starts
again from its checkpoint (its node was lost), the logger first copies the trial's result.json from
storage over the driver's copy (`LoggerCallback._restore_from_remote` in ray/tune/logger/logger.py),
which is meant for a resumed experiment, whose new driver has no copy of its own. But the storage
file may be caught mid-copy, truncated and not yet rewritten: the driver's copy is then replaced by
an empty file and every row of the trial before the restart is lost (tests/sweep/test_tune_logs.py).
Within one driver, storage only ever holds copies of the driver's files: when the driver has the
file, it is the newer one, and it is kept.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.logger import JsonLoggerCallback


class JsonLogger(JsonLoggerCallback):
    """Tune's result.json writer (in `trial_lines.tune_callbacks`), keeping the driver's rows."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if not Path(trial.local_path, file_name).exists():  # a resumed experiment: storage's rows
            super()._restore_from_remote(file_name, trial)
