"""Compiles take turns on a GPU: a compiled trial holds its GPU's turn for its first step.

Trials that start together (a sweep's first wave, or several trials freed by one ASHA decision) used
to compile at the same moment (issue 30, one H100: three fresh workers' first steps 12-20 s each, the
GPU idle meanwhile, since a compile is CPU work) and then trained in lockstep, so the next wave's
compiles fell together again. Taking turns, the first trial trains while the second compiles, and so
on: a compile overlaps another trial's training instead of leaving the GPU idle, and the trials'
ends, hence the next trials' starts, come apart.

The turn is a file lock (filelock's, an flock on Linux) named by the GPU's UUID in the node's cache,
so it holds across the trial processes of one node, and the kernel drops it when its holder dies (no
stale turn after a killed trial). Only single-worker trials take turns: ranks of one trial wait for
each other in their first step, so two multi-GPU trials each holding one GPU's turn would deadlock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from filelock import FileLock


def gpu_uuid(device: torch.device) -> str:
    """The GPU's UUID: the same in every process of the node, whatever CUDA_VISIBLE_DEVICES numbers it."""
    return str(torch.cuda.get_device_properties(device).uuid)


def gpu_turn(cache: Path, uuid: str) -> FileLock:
    """The compile turn of the GPU `uuid` names: a context manager that waits for it."""
    cache.mkdir(parents=True, exist_ok=True)
    return FileLock(str(cache / f"compile-turn-{uuid}.lock"))


@contextlib.contextmanager
def holding(turn: FileLock | None, waiting: contextlib.AbstractContextManager) -> Iterator[None]:
    """Hold `turn` for the block (no turn: just run it); `waiting` is entered while waiting for it
    (a trial's phase timer, so that the wait is a phase of its own and not part of the compile)."""
    if turn is None:
        yield
        return
    with waiting:
        turn.acquire()
    try:
        yield
    finally:
        turn.release()
