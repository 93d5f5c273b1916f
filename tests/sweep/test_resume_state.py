"""The experiment-state backup `resume` falls back on, whenever the driver was killed (sweep/resume.py).
The end-to-end kills are in test_resume.py; these place a kill exactly between two file operations."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

from sweep.resume import BACKUP, backup_state, repair_state


def _state(exp: Path, step: int) -> None:
    """Tune's state files as a sweep writes them: a JSON experiment state and a pickled searcher."""
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "experiment_state-2026.json").write_text(json.dumps({"step": step}))
    (exp / "searcher-state-2026.pkl").write_bytes(pickle.dumps({"step": step}))


def _step(exp: Path) -> int:
    return json.loads((exp / "experiment_state-2026.json").read_text())["step"]


def _truncate(exp: Path) -> None:
    for path in (*exp.glob("experiment_state-*"), *exp.glob("searcher-state-*")):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def test_the_last_readable_state_is_put_back(tmp_path):
    _state(tmp_path, 1)
    assert backup_state(tmp_path)
    _state(tmp_path, 2)
    assert backup_state(tmp_path)
    _truncate(tmp_path)
    assert not backup_state(tmp_path)  # an unreadable state never replaces the backup
    assert repair_state(tmp_path) == "repaired" and _step(tmp_path) == 2
    assert repair_state(tmp_path) == "ok"


def test_killed_between_the_backups_two_renames(tmp_path):
    """BACKUP was moved to .old, the new copy not yet renamed: the new, complete copy is used."""
    _state(tmp_path, 1)
    backup_state(tmp_path)
    _state(tmp_path, 2)
    backup_state(tmp_path)
    shutil.copytree(tmp_path / BACKUP, tmp_path / (BACKUP + ".tmp"))  # step 2's complete copy
    (tmp_path / BACKUP).rename(tmp_path / (BACKUP + ".old"))
    _state(tmp_path / (BACKUP + ".old"), 1)  # the backup before it
    _truncate(tmp_path)
    assert repair_state(tmp_path) == "repaired" and _step(tmp_path) == 2


def test_killed_while_copying_the_backup(tmp_path):
    """A copy cut short (its files readable, one missing, no COMPLETE mark) is not used."""
    _state(tmp_path, 1)
    backup_state(tmp_path)
    tmp = tmp_path / (BACKUP + ".tmp")
    tmp.mkdir()
    (tmp / "experiment_state-2026.json").write_text(json.dumps({"step": 2}))
    (tmp_path / BACKUP).rename(tmp_path / (BACKUP + ".old"))
    _truncate(tmp_path)
    assert repair_state(tmp_path) == "repaired" and _step(tmp_path) == 1


def test_nothing_readable_is_unrecoverable(tmp_path):
    _state(tmp_path, 1)
    _truncate(tmp_path)
    assert repair_state(tmp_path) == "unrecoverable"
