"""The console's live status line: trials done / running / total, the best result so far, the time
elapsed and, once it can be estimated, the time left.

Between two finished trials a sweep is otherwise silent (Tune's table comes every 10 minutes), and a
user cannot tell progress from a hang. On a terminal the line is redrawn in place (a carriage return
and an erase-to-end-of-line), and wiped before anything else is printed; where the output is a file
or a pipe (CI logs, `ray job logs`) a plain line is printed every `STATUS_EVERY_S` seconds instead.
Plain functions of Tune's `Trial` objects; `sweep/trial_lines.py` calls it from Tune's loop (not
with --verbose: Tune's own per-trial tables and the trials' output are on the console then).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time

from sweep import human

# Non-terminal output: one line this often. `QLORA_SWEEP_STATUS_EVERY_S` changes it (tests, or a
# long GPU sweep whose log should stay short).
STATUS_EVERY_S = 30.0
EVERY_ENV = "QLORA_SWEEP_STATUS_EVERY_S"
REDRAW_S = 1.0  # a terminal's line: at most once a second (the elapsed time moves by seconds)
MIN_PROGRESS = 0.1  # no time-left estimate before a tenth of the work is done: it would be noise


def progress(trials) -> float:
    """Trials done, plus the running trials' fraction of their steps, per trial asked for (0..1 of
    `len(trials)`; the caller divides by the total)."""
    done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
    partial = 0.0
    for t in trials:
        r = t.last_result or {}
        step, total = r.get("step"), r.get("total_steps")
        if (
            t.status == "RUNNING"
            and isinstance(step, int | float)
            and isinstance(total, int | float)
            and total
        ):
            partial += min(1.0, step / total)
    return done + partial


def best_so_far(trials, metric: str, mode: str) -> tuple[str, float] | None:
    """(trial id, value) of the best `metric` any trial has reported so far."""
    seen = [
        (t.trial_id, r[metric])
        for t in trials
        if t.status != "ERROR"
        for r in [t.last_result or {}]
        if isinstance(r.get(metric), int | float) and math.isfinite(r[metric])
    ]
    if not seen:
        return None
    return (min if mode == "min" else max)(seen, key=lambda kv: kv[1])


def status_text(trials, total: int | None, metric: str, mode: str, elapsed_s: float) -> str:
    """`sweep: 3/6 trials done, 2 running | best eval_loss 2.9649 (trial 1a2b3c4d) | 2 min 10 s
    elapsed, about 2 min left`."""
    total = max(total or 0, len(trials))
    done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
    running = sum(1 for t in trials if t.status == "RUNNING")
    parts = [f"sweep: {done}/{total} trials done, {running} running"]
    best = best_so_far(trials, metric, mode)
    value = human.loss(best[1]) if best and "loss" in metric else human.number(best[1]) if best else ""
    parts.append(f"best {metric} {value} (trial {best[0]})" if best else f"no {metric} yet")
    timing = f"{human.duration(elapsed_s)} elapsed"
    share = progress(trials) / total if total else 0.0
    if MIN_PROGRESS <= share < 1:
        timing += f", about {human.duration(elapsed_s * (1 - share) / share)} left"
    parts.append(timing)
    return " | ".join(parts)


class StatusLine:
    """Draws the line; holds no stream (Tune pickles its callbacks with the experiment state)."""

    def __init__(self, metric: str, mode: str):
        self.metric, self.mode = metric, mode
        self.total: int | None = None
        self._start = self._last = time.monotonic()
        self._drawn = False  # a terminal line is on screen, to wipe before other output

    def start(self, total: int | None) -> None:
        self.total = total
        self._start = self._last = time.monotonic()

    @staticmethod
    def _tty() -> bool:
        return sys.stdout.isatty()

    def update(self, trials) -> None:
        now = time.monotonic()
        every = REDRAW_S if self._tty() else float(os.environ.get(EVERY_ENV) or STATUS_EVERY_S)
        if now - self._last < every:
            return
        self._last = now
        text = status_text(trials, self.total, self.metric, self.mode, now - self._start)
        if self._tty():
            width = shutil.get_terminal_size().columns  # 80 where the terminal does not say
            sys.stdout.write("\r" + text[: max(width - 1, 20)] + "\x1b[K")
            self._drawn = True
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def clear(self) -> None:
        """Wipe the terminal's line before other output (it comes back on the next update)."""
        if self._drawn:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
            self._drawn = False
