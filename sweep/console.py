"""A console a person can read: Tune's status table, one line per finished trial, the summary.

Library chatter goes where it can still be read, not onto the driver's console:
- in a trial, everything the process prints (progress bars of datasets and transformers, warnings of
  bitsandbytes and torch, C-level prints) goes to `trial.log` in the trial's own directory, with the
  traceback if the trial fails (`trial_log`);
- outside the trials, Ray stops forwarding worker output (`ray.init(log_to_driver=False)`, in the
  runner), Tune prints its table but neither its per-trial tables nor tracebacks (Tune's own
  switches in `use_console`; `sweep/trial_lines.py` prints the one line per trial), and known-noise
  log records of the driver are dropped (`setup_logging`).
`qlora-sweep run --verbose` (and `resume --verbose`) leaves all of it on the console, as before.
This module imports neither Ray nor torch: the CLI sets up logging with it before they load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

LOG_NAME = "trial.log"
# Tune unpickles a resumed experiment's callbacks: TrialLines reads the verbosity of the command now
# running from here (`verbose()`, set while `use_console` is active), not the one it was pickled with.
_verbose = False

# Driver-side log records that tell a user nothing they can act on: logger -> message prefixes.
NOISE = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray cluster",
        "Generated new authentication token",
    ),
}
# Loggers whose INFO lines are bookkeeping (font cache, Tune's "wrote the experiment state", the
# registered version that the summary repeats): their warnings and errors still show. MLflow and
# Optuna set their own levels on import: see below.
CHATTY = ("matplotlib", "ray.tune", "ray.train", "sweep.registry")


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def setup_logging(verbose: bool) -> None:
    """The CLI's logging: INFO for our own lines; without --verbose, known noise is dropped and the
    chatty libraries show warnings only. Runs before bitsandbytes and Ray are imported, since both
    speak at import time."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    for name, prefixes in NOISE.items():
        logging.getLogger(name).addFilter(_DropPrefixes(prefixes))
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial MLflow database tables..."
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # registry and report downloads


@contextlib.contextmanager
def use_console(verbose: bool) -> Iterator[None]:
    """Around a sweep's Tune run: Tune's and Optuna's own switches for what reaches the console, put
    back afterwards (a Python caller's process keeps its settings)."""
    import optuna

    global _verbose
    env = {
        # A failed trial's traceback stays in its trial.log and Tune's error.txt; TrialLines prints
        # the reason.
        "TUNE_PRINT_ALL_TRIAL_ERRORS": "1" if verbose else "0",
        # Tune's automatic loggers are replaced by the two in `trial_lines.tune_callbacks`: no
        # TensorBoard logger, whose install hint shows when tensorboardX is missing (MLflow is our tracker).
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    }
    saved_env, saved = {k: os.environ.get(k) for k in env}, (_verbose, optuna.logging.get_verbosity())
    os.environ.update(env)
    _verbose = verbose
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    try:
        yield
    finally:
        _verbose = saved[0]
        optuna.logging.set_verbosity(saved[1])
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def verbose() -> bool:
    return _verbose


def trial_dir() -> Path:
    """This trial's directory in the sweep's storage (where its checkpoints and result.json are), from
    Tune's own storage context: the sweep's storage_path may be relative, and Tune runs a trial in
    another working directory. A URI storage has no local directory: the log stays in the trial's
    node-local staging directory (Tune's `get_trial_dir()`)."""
    from ray import tune

    ctx = tune.get_context()
    storage = ctx.get_storage()
    if storage.storage_filesystem.type_name == "local":
        return Path(storage.trial_fs_path)
    return Path(ctx.get_trial_dir())


@contextlib.contextmanager
def trial_log(path: Path, what: str = "trial") -> Iterator[Path]:
    """Send this process's output to the trial's log for as long as the trial runs, then give it back
    (`what` names the work in the log's header: the driver's samples use it too):
    file descriptors 1 and 2 (C-level prints, child processes) and sys.stdout/sys.stderr (Python
    prints, tqdm bars, warnings; they need not write to fd 1 and 2). A worker process that Tune reuses
    for the next trial writes that trial's output to that trial's log. A failure's traceback is
    written to the log before it propagates to Tune."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {what} starts (pid {os.getpid()}) ===\n")
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    yield path
                except Exception:  # not SystemExit: Tune ends every function trial with one
                    traceback.print_exc()
                    raise
        finally:
            log.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def failure_reason(err: BaseException | str) -> str:
    """The line of an error a person reads first: its last line, the exception's class (without its
    module path: "ConfigError", not "evaluation.errors.ConfigError") and message."""
    lines = str(err).strip().splitlines()
    if not lines:
        return "unknown error" if isinstance(err, str) else type(err).__name__
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", lines[-1])[:300]
