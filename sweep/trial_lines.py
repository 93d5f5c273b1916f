"""Our Tune callback for the console: Tune's own status table, one line per finished trial (its
config, eval loss, time, and why it stopped: completed, stopped early by ASHA, or failed with the
reason) in place of Tune's per-trial config and result tables, and the live status line
(`sweep/status_line.py`). With --verbose it prints Tune's per-trial tables as before.

Tune always adds its own reporter; the runner sets it to silent (it then prints the experiment's
header and a failed trial's error block only). The table is drawn by a second instance of Tune's
reporter held here, not registered as a reporter: Tune would hand its start time to the first
reporter only, and the other then fails when it prints an error.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import ray
from ray import tune
from ray.tune.experimental.output import AirVerbosity, TuneTerminalReporter
from ray.tune.logger import CSVLoggerCallback

from sweep import console, human
from sweep.space import tune_space
from sweep.status_line import StatusLine
from sweep.tune_logs import JsonLogger

# Tune's table at the start, at the end, and in between at most this often: the lines of finished
# trials show the progress (a 6-trial CPU quickstart of ~5 min then prints 2 or 3 tables, not 10).
TABLE_EVERY_S = 600


def tune_callbacks(cfg) -> list:
    """The callbacks that replace Tune's automatic ones (see `console.use_console`): the JSON and CSV
    loggers Tune's results are read from (the JSON one keeps a restarted trial's rows, see
    `sweep/tune_logs.py`), and this one."""
    s = cfg.search
    return [
        TrialLines(s.metric, s.mode, tune_space(s.space), s.scheduler.type),
        JsonLogger(),
        CSVLoggerCallback(),
    ]


def _config_text(config: dict) -> str:
    return " ".join(f"{k}={human.number(v) if isinstance(v, float) else v}" for k, v in config.items())


class TrialLines(tune.Callback):
    def __init__(self, metric: str, mode: str, space: dict, scheduler: str):
        self._table = TuneTerminalReporter(AirVerbosity.DEFAULT, metric=metric, mode=mode, config=space)
        self._table._heartbeat_freq = TABLE_EVERY_S  # Tune's is 30 s (a class attribute marked TODO)
        self._scheduler = scheduler
        self._status = StatusLine(metric, mode)
        self._started: dict[str, float] = {}
        self._total = ""

    def setup(self, total_num_samples: int | None = None, **info):
        self._table.setup(start_time=time.time(), total_samples=total_num_samples)
        self._status.start(total_num_samples)
        self._table._start_block("header")  # Tune's header comes next: a blank line after it
        total = ray.cluster_resources()
        self._total = f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"

    def _usage(self, trials) -> str:
        """Tune's "Logical resource usage" line, from the running trials' resource requests."""
        used = Counter()
        for t in trials:
            if t.status == t.RUNNING:
                used.update(t.placement_group_factory.required_resources)
        cpus, gpus = self._total.split(", ")
        return f"Logical resource usage: {used['CPU']:g}/{cpus}, {used['GPU']:g}/{gpus}"

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self._table._last_heartbeat_time >= self._table._heartbeat_freq:
            self._status.clear()  # Tune's table is about to print
        self._table.print_heartbeat(trials, self._usage(trials))
        if not console.verbose():
            self._status.update(trials)

    def on_experiment_end(self, trials, **info):
        self._status.clear()
        self._table.print_heartbeat(trials, self._usage(trials), force=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.monotonic()
        if console.verbose():
            self._table.on_trial_start(iteration, trials, trial, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if console.verbose():
            self._table.on_trial_complete(iteration, trials, trial, **info)
            return
        r = trial.last_result or {}
        step, total = r.get("step"), r.get("total_steps")
        if step is not None and step == total:
            why = f"completed ({step}/{total} steps)"
        else:
            why = f"stopped early{' by ASHA' if self._scheduler == 'asha' else ''} at step {step}/{total}"
        loss = r.get("eval_loss")
        loss = f"eval_loss {human.loss(loss)}" if isinstance(loss, (int, float)) else "no eval_loss"
        self._line(trial, f"{loss} in {self._seconds(trial)}: {why}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._failed(trial, "failed")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._failed(trial, "failed, retrying from its last checkpoint")

    def _failed(self, trial, what: str) -> None:
        if console.verbose():
            return  # Tune's own reporter prints the error block, and its controller the traceback
        error = Path(trial.error_file) if trial.error_file else None
        reason = console.failure_reason(error.read_text()) if error and error.is_file() else "see error.txt"
        self._line(trial, f"{what} after {self._seconds(trial)}: {reason}")

    def _seconds(self, trial) -> str:
        return human.duration(time.monotonic() - self._started.get(trial.trial_id, time.monotonic()))

    def _line(self, trial, text: str) -> None:
        self._status.clear()
        self._table._start_block("trial_lines")  # consecutive lines together, a blank line before a table
        print(f"trial {trial.trial_id} ({_config_text(trial.config)}): {text}")
