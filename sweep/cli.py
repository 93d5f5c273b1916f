"""`qlora-sweep`: one entry point with subcommands (train, run, resume, plan, report, eval, ...).

User mistakes (`ConfigError`) print one line naming the field, the value and what is allowed, and
exit with status 2; tracebacks are left for our own bugs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from importlib import metadata, resources
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import NoReturn

from evaluation.errors import ConfigError
from sweep.console import setup_logging

STARTED = time.time()  # the CLI's start (Python's own start and the light imports above are before it)

QUICKSTART = "quickstart.yaml"
COMMANDS_GROUP = "qlora_sweep.commands"  # entry points adding subcommands (cluster: submit, jobs)


def _examples_dir() -> Path:
    """examples/ beside the package (source checkout) — the README's main job lives there."""
    here = Path(__file__).resolve().parent.parent / "examples"
    return here if here.is_dir() else Path(str(resources.files("sweep"))) / "examples"


def _add_sets(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. --set lora.r=16 (repeatable)",
    )


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show every trial's and library's output on the console (default: in each trial's trial.log)",
    )


def _add_overwrite(p: argparse.ArgumentParser, what: str, other: str) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"start again although {what} holds results: they are moved aside to "
        f"<dir>.replaced-<time> (nothing is deleted). Without it, results of another config are an "
        f"error (use {other} to keep both) and the same config resumes",
    )


def cmd_train(a) -> int:
    from trainables.config import load_trial_config
    from trainables.data import describe_stats
    from trainables.phases import describe as describe_phases
    from trainables.provenance import claim_output_dir
    from trainables.reporting import PrintReporter
    from trainables.trial import run_trial

    cfg = load_trial_config(a.config, a.sets)
    out = a.output or cfg.output_dir or "qlora-train-output"
    said = claim_output_dir(Path(out), cfg, overwrite=a.overwrite)  # another config's run: an error, now
    if said:
        print(said)
    reporter = PrintReporter(out, keep=cfg.training.keep_checkpoints)
    started = time.perf_counter()
    final = run_trial(cfg, reporter)
    print(
        f"\ntrained {cfg.model.path} ({cfg.quantization.bits}-bit, r={cfg.lora.r}, "
        f"{cfg.lora.target_modules}) in {time.perf_counter() - started:.0f}s"
    )
    print(
        f"eval loss {final['base_eval_loss']:.4f} (base) -> {final['eval_loss']:.4f}; "
        f"perplexity {final['perplexity']:.2f}; trainable params {final['trainable_params']:,}"
    )
    if final.get("data_stats"):
        print(f"data: {describe_stats(final['data_stats'])}")
    print(describe_phases(final))
    print(f"adapter: {reporter.checkpoint_dir(final['step']) / 'adapter'}")
    return 0


def cmd_run(a) -> int:
    from sweep.config import load_sweep_config

    # Validated before torch and Ray load: a bad config is one line, at once.
    cfg = load_sweep_config(a.config or str(_examples_dir() / QUICKSTART), a.sets)
    from sweep.reuse import claim_experiment

    # A name with results: the same config resumes, another one is an error (before Ray starts).
    restore, said = claim_experiment(cfg, overwrite=a.overwrite)
    if said:
        print(said)
    from sweep.ray_start import connect_while_importing

    connect_while_importing(
        "sweep.session", log_to_driver=a.verbose, since=STARTED, then=lambda: _open_store(cfg)
    )
    from sweep.session import run_and_summarize

    return run_and_summarize(cfg, restore=restore, verbose=a.verbose)


def _open_store(cfg) -> None:  # noqa: ANN001 - a SweepConfig (imported lazily)
    """The sweep's MLflow store, opened beside Ray's start (sweep/tracking_runs.py)."""
    from sweep.tracking_runs import open_store

    try:
        uri = cfg.tracking_uri()
    except ConfigError:  # the sweep raises it in its place
        return
    open_store(uri)


def cmd_resume(a) -> int:
    from sweep.reuse import check_resumable
    from sweep.runner import experiment_config
    from sweep.session import run_and_summarize

    cfg = experiment_config(a.experiment)
    check_resumable(a.experiment, cfg)
    return run_and_summarize(cfg, restore=True, verbose=a.verbose)


def cmd_plan(a) -> int:
    from sweep.config import load_sweep_config

    # Validated before torch loads: a bad config is one line, with no import warnings before it.
    cfg = load_sweep_config(a.config, a.sets)
    from sweep.plan import render_plan

    print(render_plan(cfg, a.gpu_memory_gb or cfg.resources.gpu_memory_gb or 80.0, measured=True))
    return 0


def cmd_report(a) -> int:
    from sweep.report import build_report
    from sweep.reuse import parent_run_of
    from sweep.runner import experiment_config

    cfg = experiment_config(a.experiment)
    parent = parent_run_of(a.experiment)  # this experiment's own trials, also once moved aside
    md, html = build_report(cfg.tracking_uri(), cfg.name, Path(a.experiment), parent_run_id=parent)
    print(f"report: {md}\n        {html}")
    return 0


def cmd_eval(a) -> int:
    from trainables.config import load_trial_config
    from trainables.evaluate import evaluate_adapter

    cfg = load_trial_config(a.config, a.sets)
    print(json.dumps(evaluate_adapter(cfg, a.adapter), indent=1))
    return 0


def cmd_judge_check(a) -> int:
    from trainables.config import load_trial_config
    from trainables.judging import calibrate_judge

    cfg = load_trial_config(a.config, a.sets)
    print(json.dumps(calibrate_judge(cfg), indent=1))
    return 0


def cmd_fetch_model(a) -> int:
    from trainables.builtin_models import resolve_model_path

    print(resolve_model_path(a.name, fetch=True))
    return 0


def add_commands_of(
    sub: argparse._SubParsersAction, entry_points: Iterable[EntryPoint] | None = None
) -> None:
    """Subcommands that installed packages declare in the `qlora_sweep.commands` entry-point group.

    This is how `cluster` adds `submit` and `jobs` (pyproject.toml) while sweep imports nothing above
    it: the dependency arrow `cluster -> sweep` keeps pointing one way. Each entry point is a function
    that adds its parsers to `sub`; `entry_points` replaces the installed ones (tests)."""
    if entry_points is None:
        entry_points = metadata.entry_points(group=COMMANDS_GROUP)
    for ep in entry_points:
        ep.load()(sub)


def parser(entry_points: Iterable[EntryPoint] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qlora-sweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run one trial without Ray and print a summary")
    t.add_argument("config", nargs="?", help="trial YAML (default: built-in defaults, SmolLM2-135M)")
    t.add_argument("--output", help="output directory (checkpoints, adapter)")
    _add_overwrite(t, "the output directory", "--output DIR")
    t.add_argument("--fresh", dest="overwrite", action="store_true", help="the same as --overwrite")
    _add_sets(t)
    t.set_defaults(fn=cmd_train)
    r = sub.add_parser("run", help="run a sweep (local Ray, or the cluster in RAY_ADDRESS)")
    r.add_argument("config", nargs="?", help=f"sweep YAML (default: examples/{QUICKSTART})")
    _add_sets(r)
    _add_verbose(r)
    _add_overwrite(r, "the sweep's name", "--set name=NEW_NAME")
    r.set_defaults(fn=cmd_run)
    rs = sub.add_parser("resume", help="resume an interrupted sweep")
    rs.add_argument("experiment", help="experiment directory (storage_path/name)")
    _add_verbose(rs)
    rs.set_defaults(fn=cmd_resume)
    pl = sub.add_parser("plan", help="validate a sweep and print parameters and memory per combination")
    pl.add_argument("config")
    pl.add_argument("--gpu-memory-gb", type=float, default=None)
    _add_sets(pl)
    pl.set_defaults(fn=cmd_plan)
    rp = sub.add_parser("report", help="write report.md and report.html for an experiment")
    rp.add_argument("experiment")
    rp.set_defaults(fn=cmd_report)
    ev = sub.add_parser("eval", help="evaluate a saved adapter like a trial")
    ev.add_argument("--adapter", required=True)
    ev.add_argument("--config", required=False)
    _add_sets(ev)
    ev.set_defaults(fn=cmd_eval)
    jc = sub.add_parser("judge-check", help="score the judge on a calibration set")
    jc.add_argument("config", nargs="?")
    _add_sets(jc)
    jc.set_defaults(fn=cmd_judge_check)
    fm = sub.add_parser("fetch-model", help="fetch and convert a built-in model into the cache")
    fm.add_argument(
        "name", help="smollm2-135m, tiny, or a portable name as adapters record it (qlora-sweep:<build>)"
    )
    fm.set_defaults(fn=cmd_fetch_model)
    add_commands_of(sub, entry_points)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"qlora-sweep: error: {err}", file=sys.stderr)
        return 2


def entry() -> NoReturn:
    """The `qlora-sweep` command (and `python -m sweep.cli`): `main`, then, after a command that ran
    Ray, a quick exit. The interpreter's own teardown after a sweep (Ray's core worker, torch) took ~5 s
    past the summary on a 2-core CPU, for nothing left to do: flush, stop Ray, exit."""
    code = main()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        import logging

        sys.modules["ray"].shutdown()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
