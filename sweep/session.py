"""A whole sweep as a user runs it: save its config, check the judge, run (or resume), register the
best adapter, write the report, print a summary a person can act on. Exit status 1 if every trial failed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml

from sweep import human
from sweep.config import SweepConfig
from sweep.console import LOG_NAME
from sweep.reuse import SAVED, experiment_dir, record_experiment
from sweep.runner import SweepOutcome, run_sweep

log = logging.getLogger(__name__)


def _save_config(cfg: SweepConfig) -> None:
    """The experiment keeps its own config, so `resume` and `report` need only its directory, and
    its config record (hash + config), so that a later run under its name is checked against it."""
    out = experiment_dir(cfg)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / SAVED).write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        record_experiment(cfg)


def _check_judge(cfg: SweepConfig) -> dict:
    if cfg.judge.backend == "none" or not cfg.judge.calibrate:
        return {}
    from trainables.judging import calibrate_judge

    result = calibrate_judge(cfg)
    if not result.get("judge_trusted", True):
        log.warning(
            "judge calibration accuracy %s is below judge.min_accuracy %.2f: its scores are not trustworthy",
            result.get("judge_accuracy"),
            cfg.judge.min_accuracy,
        )
    return result


def run_and_summarize(cfg: SweepConfig, restore: bool = False, verbose: bool = False) -> int:
    started = time.perf_counter()
    _save_config(cfg)
    calibration = _check_judge(cfg) if not restore else {}
    outcome = run_sweep(cfg, restore=restore, calibration=calibration, verbose=verbose)
    record_experiment(cfg, outcome.parent_run_id)  # `report DIR` finds its own trials, also once moved aside
    lap = time.perf_counter()
    if outcome.best and cfg.tracking.register_best:
        _register(cfg, outcome)
    _report(cfg, outcome)
    if outcome.driver is not None:  # the summary's "driver:" line: every second outside the trials
        outcome.driver["report"] = round(time.perf_counter() - lap, 3)
    print(summary(cfg, outcome, time.perf_counter() - started))
    return 0 if outcome.finished else 1


def _register(cfg: SweepConfig, outcome: SweepOutcome) -> None:
    from sweep.registry import register_champion

    try:
        version = register_champion(
            cfg.tracking_uri(),
            outcome.best["run_id"],
            cfg.tracking.model_name or cfg.name,
            merge=cfg.tracking.merge,
            base_model_dir=outcome.best["config"]["model"]["path"],
        )
        outcome.best["registered"] = version
    except Exception as err:  # noqa: BLE001 - the sweep's results stand even if the registry is unreachable
        log.warning("could not register the best adapter: %s", err)


def _report(cfg: SweepConfig, outcome: SweepOutcome) -> None:
    from sweep.report import build_report

    out = experiment_dir(cfg) or Path.cwd() / cfg.name
    try:
        outcome.report = build_report(cfg.tracking_uri(), cfg.name, out, parent_run_id=outcome.parent_run_id)
    except Exception as err:  # noqa: BLE001 - a report failure must not hide the sweep's result
        log.warning("could not write the report: %s", err)


def summary(cfg: SweepConfig, outcome: SweepOutcome, seconds: float) -> str:
    """The final lines: best trial, its config and metrics, its adapter, the base model's eval loss."""
    lines = [
        f"\n=== sweep {cfg.name}: {outcome.finished} finished ({outcome.stopped_early} stopped early by ASHA), "
        f"{outcome.failed} failed, {human.duration(seconds)} ==="
    ]
    if outcome.driver:  # where the wall time went outside the trials, too
        lines.append(
            "driver: "
            + ", ".join(f"{k.replace('_', ' ')} {human.duration(v)}" for k, v in outcome.driver.items())
        )
    logs = _trial_logs(outcome.experiment_path)
    for trial, reason in outcome.errors.items():
        lines.append(f"failed {trial}: {reason}")
        if logs:
            lines.append(f"  its log, with the traceback: {Path(outcome.experiment_path) / trial / LOG_NAME}")
    if outcome.search:  # sweep/dedup.py: a config already tried is answered, never trained again
        lines.append(f"proposals answered from earlier trials: {outcome.search['answered']}")
        lines += [outcome.search["finished"]] if outcome.search["finished"] else []
    best = outcome.best
    if not best:
        lines.append("no trial finished: nothing to compare (see the failures above)")
        return "\n".join(lines + logs)
    m = best["metrics"]
    lines.append(f"best trial {best['trial_id']} by {cfg.search.metric} ({cfg.search.mode}):")
    lines += [f"  {k} = {human.number(v) if isinstance(v, float) else v}" for k, v in best["params"].items()]
    base, ev = m.get("base_eval_loss"), m.get("eval_loss")
    if isinstance(base, float) and isinstance(ev, float):
        lines.append(
            f"  eval loss: base model {base:.4f} -> best trial {ev:.4f} ({100 * (base - ev) / base:.1f}% lower)"
        )
    shown = (  # for a person; the exact values are in MLflow and the trial's result.json
        ("perplexity", "perplexity", human.number),
        ("judge_score", "judge score", human.number),
        ("trainable_params", "trainable params", human.count),
        ("tokens_per_s", "throughput", lambda v: human.rate(v, "tokens/s")),
        ("gpu_seconds", "GPU time" if m.get("gpu_ids") else "CPU time", human.duration),
    )
    lines += [
        f"  {label}: {fmt(m[key])}" for key, label, fmt in shown if isinstance(m.get(key), (int, float))
    ]
    lines.append(f"  adapter: {best['checkpoint']}/adapter")
    if best.get("registered"):
        r = best["registered"]
        merged = (
            f"; merged: {r['merged_name']} version {r.get('merged_version')}" if r.get("merged_name") else ""
        )
        lines.append(f"  registered: {r.get('name')} version {r.get('version')} as @{r.get('alias')}{merged}")
    if getattr(outcome, "report", None):
        lines.append(f"report: {outcome.report[1]}")
    lines += logs
    lines.append(f"resume or inspect: qlora-sweep resume {outcome.experiment_path}")
    return "\n".join(lines)


def _trial_logs(experiment: str) -> list[str]:
    """Where each trial's own output went (none with --verbose: it was on the console)."""
    if "://" in experiment or not any(Path(experiment).glob(f"*/{LOG_NAME}")):
        return []
    return [f"trial logs (progress bars, warnings, tracebacks): {Path(experiment) / '*' / LOG_NAME}"]
