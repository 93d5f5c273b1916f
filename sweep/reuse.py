"""What `qlora-sweep run` does when its sweep name already has results in storage (issue 27).

A sweep's results are its experiment directory (storage_path/name), its MLflow parent run with one
child run per trial, its report and the registered champion; they must all come from one config.
Before any work (no Ray, no MLflow), the config is compared with the one the experiment recorded
(`trainables/provenance.py`: the fields that can change a result):
  - no experiment yet: a new sweep;
  - the same config: the sweep is resumed (`qlora-sweep resume`), finished trials are not trained again;
  - another config: an error naming the fields that differ and the ways forward; nothing is touched;
  - `--overwrite`: the experiment directory is moved aside to `<name>.replaced-<time>` and a new sweep
    starts, with a new MLflow parent run (the old one and its trials stay as they were).
Only local (or mounted) storage is checked; a sweep in s3:// or gs:// storage is not.
"""

from __future__ import annotations

from pathlib import Path

from evaluation.errors import ConfigError
from sweep.config import SweepConfig
from trainables.provenance import archive, differences, read_record, refuse, write_record

SAVED = "sweep_config.yaml"  # the whole config, as `resume` and `report` read it back


def experiment_dir(cfg: SweepConfig) -> Path | None:
    storage = cfg.storage()
    return None if "://" in storage else Path(storage) / cfg.name


def _recorded(exp: Path) -> dict | None:
    """The config the experiment recorded (older experiments: their saved sweep_config.yaml)."""
    record = read_record(exp)
    if record is not None:
        return record["config"]
    if (exp / SAVED).is_file():
        from trainables.config import read_yaml

        return read_yaml(exp / SAVED)
    return None


def claim_experiment(cfg: SweepConfig, overwrite: bool = False) -> tuple[bool, str]:
    """(whether to resume, what to tell the user), or `ResultsOfAnotherConfig` before any work."""
    exp = experiment_dir(cfg)
    if exp is None or not exp.is_dir() or not any(exp.iterdir()):
        return False, ""
    if overwrite:
        return False, f"moved the earlier sweep {cfg.name} aside to {archive(exp)}"
    old = _recorded(exp)
    if old is None or differences(old, cfg):
        refuse(
            "name",
            exp,
            old,
            cfg,
            [
                f"continue that sweep with its own config: qlora-sweep resume {exp}",
                "keep both: another name (--set name=NEW_NAME, or another storage_path)",
                f"replace it: --overwrite (moves {exp} aside to {exp.name}.replaced-<time>, deletes "
                "nothing; the new sweep gets its own MLflow parent run)",
            ],
        )
    if not any(exp.glob("experiment_state-*.json")):  # killed before Tune wrote any state
        return False, f"sweep {cfg.name} has the same config but no Tune state to resume: starting it again"
    return True, f"sweep {cfg.name} already exists with this config: resuming it (finished trials are kept)"


def check_resumable(path: str, cfg: SweepConfig) -> None:
    """`resume DIR` continues the sweep in DIR only: a directory moved aside by --overwrite keeps its
    results for reading (`qlora-sweep report DIR`), but its name now belongs to the newer sweep."""
    exp = experiment_dir(cfg)
    if exp is not None and exp.resolve() != Path(path).resolve():
        raise ConfigError(
            "EXPERIMENT",
            path,
            f"the live experiment directory of sweep {cfg.name} ({exp})",
            hint="this one was moved aside by --overwrite (or by hand, or its relative storage_path "
            "means another directory from here); `qlora-sweep report` still reads it",
        )


def record_experiment(cfg: SweepConfig, parent_run_id: str | None = None) -> None:
    """Write the experiment's config record (and, once known, its MLflow parent run)."""
    exp = experiment_dir(cfg)
    if exp is not None:
        extra = {"mlflow_parent_run_id": parent_run_id} if parent_run_id else {}
        write_record(exp, cfg, **extra)


def parent_run_of(path: str | Path) -> str | None:
    record = read_record(Path(path))
    return (record or {}).get("mlflow_parent_run_id")
