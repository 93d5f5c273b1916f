"""Which config produced a result: a canonical hash plus the config itself, and the check that a
directory of results is only ever continued by the config that made it (issue 27).

`qlora-sweep train` keeps its record in the output directory and in every checkpoint; a sweep keeps
it in its experiment directory (`sweep/reuse.py`). Both compare through `differences` here, so that
"the same config" means one thing everywhere.

The hash covers every field that can change a result. Left out (`NEUTRAL`), because they only say
where results go, how they are logged or how a run is placed and retried:
  output_dir, training.keep_checkpoints, judge.cache_dir, judge.concurrency, judge.timeout_s,
  judge.retries, judge.backoff_s (trial); name, storage_path, max_failures, tracking.*,
  resources.cpu, resources.gpu, resources.gpu_memory_gb (sweep).
A sweep's search section (space, seed, num_samples, concurrency, scheduler) is part of the hash: it
decides which trials exist.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evaluation.errors import ConfigError
from trainables.config import flatten

RECORD = "config_record.json"  # in a train output dir, a checkpoint, a sweep's experiment dir
NEUTRAL = (
    "output_dir",
    "training.keep_checkpoints",
    "judge.cache_dir",
    "judge.concurrency",
    "judge.timeout_s",
    "judge.retries",
    "judge.backoff_s",
    "name",
    "storage_path",
    "max_failures",
    "tracking",
    "resources.cpu",
    "resources.gpu",
    "resources.gpu_memory_gb",
)


def _neutral(path: str) -> bool:
    return any(path == n or path.startswith(n + ".") for n in NEUTRAL)


def canonical(cfg: BaseModel | dict) -> dict[str, Any]:
    """The dotted fields that can change a result, JSON-typed (what the hash and the diff see)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    return {k: v for k, v in flatten(data).items() if not _neutral(k)}


def config_hash(cfg: BaseModel | dict) -> str:
    text = json.dumps(canonical(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: BaseModel | dict, new: BaseModel | dict) -> list[str]:
    """'lora.r: 8 -> 32' for every result-changing field that differs ('(unset)' where one lacks it)."""
    if isinstance(old, dict) and isinstance(new, BaseModel):  # an older record: today's defaults apply
        try:
            old = type(new).model_validate(old)
        except ValueError:
            pass  # a field that no longer exists: compared as written
    a, b = canonical(old), canonical(new)
    missing = "(unset)"
    return [
        f"{k}: {json.dumps(a.get(k, missing))} -> {json.dumps(b.get(k, missing))}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k, missing) != b.get(k, missing)
    ]


def write_record(directory: Path, cfg: BaseModel, **extra: Any) -> None:
    """`directory/config_record.json`: the hash, the whole config, and which fields the hash leaves out."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "config_hash": config_hash(cfg),
        "excluded_from_hash": list(NEUTRAL),
        **extra,
        "config": cfg.model_dump(mode="json"),
    }
    tmp = directory / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(directory / RECORD)


def read_record(directory: Path) -> dict | None:
    path = Path(directory) / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def archive(path: Path) -> Path:
    """Move `path` aside to `<path>.replaced-<UTC time>` (never deleted: a person decides that)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    shutil.move(str(path), str(dest))
    return dest


class ResultsOfAnotherConfig(ConfigError):
    """A directory of results made by another config: several lines (the differences, the ways forward)."""

    def __init__(self, field: str, value: Any, allowed: str, hint: str = "") -> None:
        super().__init__(field, value, allowed, hint)
        self.args = (f"{value} holds {allowed}\n{hint}",)


def refuse(field: str, where: Path | str, old: dict | None, new: BaseModel, ways: list[str]) -> None:
    """Raise `ResultsOfAnotherConfig` before any work: what differs, that nothing changed, what to do."""
    if old is None:
        what = "results without a config record (written before qlora-sweep recorded configs)"
        diff: list[str] = []
    else:
        what = f"results of another config ({config_hash(old)}; this one is {config_hash(new)})"
        diff = ["it differs in:", *(f"  {d}" for d in differences(old, new))]
    hint = "\n".join([*diff, "Nothing was changed. Ways forward:", *(f"  - {w}" for w in ways)])
    raise ResultsOfAnotherConfig(field, str(where), what, hint)


def claim_output_dir(out: Path, cfg: BaseModel, overwrite: bool = False) -> str:
    """Before `qlora-sweep train` does any work: the output dir is new, or holds this config's run
    (resumed), or is moved aside with `overwrite`; another config's results raise. Returns what happened."""
    ckpts = out / "checkpoints"
    record = read_record(out)
    used = ckpts.is_dir() and any(ckpts.iterdir())  # a run stopped before its first checkpoint left nothing
    said = ""
    if used and overwrite:
        said = f"moved the earlier results aside to {archive(out)}"
    elif used and (record is None or differences(record["config"], cfg)):
        refuse(
            "--output",
            out,
            record and record["config"],
            cfg,
            [
                *(
                    [f"resume it: the same command with the config that made it (in {out / RECORD})"]
                    if record
                    else []
                ),
                "keep both: a new output directory (--output DIR)",
                f"replace it: --overwrite (moves {out} aside to {out.name}.replaced-<time>, deletes nothing)",
            ],
        )
    elif used:
        said = f"resuming the run in {out} (same config {config_hash(cfg)})"
    write_record(out, cfg)
    return said
