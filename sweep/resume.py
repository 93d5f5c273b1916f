"""Make an interrupted sweep resumable, whenever the driver was killed.

Ray Tune writes its experiment state (experiment_state-*.json, searcher-state-*.pkl, ...) at most
every ~10 s by default and not atomically: a driver killed in between resumes from stale state, and
one killed mid-write leaves a truncated file that `Tuner.restore` cannot read (it then continues
without state and fails). So the driver (1) asks Tune to write state after every event and (2) keeps a
copy of the last state that fully parses; `repair_state` puts that copy back before restoring.
The copy is swapped in by two renames, and a kill can fall between them: the copy being swapped in
(marked complete once every file is in it) or the one before it then serves.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

from ray import tune

BACKUP = ".state-backup"
COMPLETE = "COMPLETE"  # written last into a backup: all of its files are there
STATE_GLOBS = ("experiment_state-*.json", "searcher-state-*.pkl", "search_gen_state-*.json", "tuner.pkl")


def write_state_often() -> None:
    """Tune checkpoints its experiment state after every event (not every ~10 s)."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")


def _state_files(exp: Path) -> list[Path]:
    return sorted(p for pattern in STATE_GLOBS for p in exp.glob(pattern))


def _readable(path: Path) -> bool:
    """Whether a state file parses completely (Ray's search_gen_state-*.json is in fact a pickle)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        pickle.loads(data)  # noqa: S301 - Ray's own state file, written by this experiment
        return True
    except Exception:  # noqa: BLE001 - any parse failure means "not a usable state file"
        return False


def state_is_readable(exp: Path) -> bool:
    files = _state_files(exp)
    return any(p.name.startswith("experiment_state-") for p in files) and all(_readable(p) for p in files)


def backup_state(exp: Path) -> bool:
    """Copy the current state files aside; the copy replaces the backup if (and only if) every file
    of it parses. The copy is what is checked: the background sync to storage truncates a file before
    it rewrites it, so a file that parsed a moment ago may be copied cut short."""
    tmp = exp / (BACKUP + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for path in _state_files(exp):
        shutil.copy2(path, tmp / path.name)
    if not state_is_readable(tmp):  # the backup stays as it was; an unmarked .tmp is never used
        return False
    (tmp / COMPLETE).touch()
    old = exp / (BACKUP + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if (exp / BACKUP).exists():
        (exp / BACKUP).rename(old)
    tmp.rename(exp / BACKUP)
    shutil.rmtree(old, ignore_errors=True)
    return True


def repair_state(exp: Path) -> str:
    """Before `Tuner.restore`: 'ok' if the state parses, 'repaired' if the backup was put back."""
    if state_is_readable(exp):
        return "ok"
    # Newest first. Only a whole copy is ever renamed to BACKUP or .old; .tmp may be cut short.
    candidates = [exp / BACKUP, exp / (BACKUP + ".tmp"), exp / (BACKUP + ".old")]
    usable = (
        d for d in candidates if (d.suffix != ".tmp" or (d / COMPLETE).is_file()) and state_is_readable(d)
    )
    chosen = next(usable, None)
    if chosen is None:
        return "unrecoverable"
    for path in _state_files(exp):
        path.unlink()
    for path in _state_files(chosen):
        shutil.copy2(path, exp / path.name)
    return "repaired"


class StateBackup(tune.Callback):
    """Driver-side: after each Tune step, keep the last fully readable experiment state."""

    def __init__(self, experiment_dir: str):
        self.exp = Path(experiment_dir)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.exp.is_dir():
            backup_state(self.exp)
