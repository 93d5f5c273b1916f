"""Joining or starting Ray, kept light (no torch, no Tune) so that the CLI can start Ray while the
sweep's heavy imports load beside it."""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable

import ray

seconds = 0.0  # how long the last start or join took (the sweep's driver_ray_start_s)
startup = None  # the CLI's seconds before that start or join (driver_startup_s); None outside the CLI


def connect_ray(num_cpus: int | None = None, log_to_driver: bool = True, since: float | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (ray job submit sets it) or start a local instance.
    Without `log_to_driver`, workers' output stays in Ray's logs and the trials' own logs."""
    global seconds, startup
    if ray.is_initialized():
        return
    startup = None if since is None else time.time() - since
    started = time.perf_counter()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=log_to_driver)
    else:
        # The dashboard (on 127.0.0.1) stays on: Ray Train's placement-group cleanup needs its state API.
        ray.init(num_cpus=num_cpus, log_to_driver=log_to_driver)
    seconds = time.perf_counter() - started


def connect_while_importing(
    module: str, log_to_driver: bool, since: float | None = None, then: Callable[[], None] | None = None
) -> None:
    """Start Ray (~4-10 s, mostly waiting for its processes) while `module` and what it needs (torch,
    transformers, peft, Ray Tune: ~5-9 s) import in another thread, followed by `then` (opening the
    tracking store). Not the other way round: Ray's processes die with the thread that started them,
    so ray.init stays on the main thread."""

    def ahead() -> None:
        importlib.import_module(module)
        if then is not None:
            then()

    importer = threading.Thread(target=ahead, daemon=True)
    importer.start()
    try:
        connect_ray(log_to_driver=log_to_driver, since=since)
    finally:  # also when Ray fails to start: never exit while it migrates the MLflow store's tables
        importer.join()
