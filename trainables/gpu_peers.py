"""The trials sharing a GPU see each other, through files in the node's cache: compile turns, and
how many of them train at a moment.

**Compile turns.** Trials that start together (a sweep's first wave, or several trials freed by one
ASHA decision) used to compile at the same moment (issue 30, one H100: three fresh workers' first
steps 12-20 s each, the GPU idle meanwhile, since a compile is CPU work) and then trained in
lockstep, so the next wave's compiles fell together again. A compiled trial now holds its GPU's turn
for its first step: the first trial trains while the second compiles, and so on, and the trials'
ends, hence the next trials' starts, come apart. The turn is a file lock (filelock's, an flock on
Linux) named by the GPU's UUID, so it holds across the trial processes of one node, and the kernel
drops it when its holder dies. Only single-worker trials take turns: ranks of one trial wait for each
other in their first step, so two multi-GPU trials each holding one GPU's turn would deadlock.

**Who trains now.** A trial's steady rate tells the planner what k trials sharing a GPU train
together (trainables/node_stats.py), but with turns the k trials of a share do not all train at
once: the first one trains alone while the others wait or compile (issue 30: a trial recorded as
"3 sharing" trained alone at 30.5k tokens/s, and the node concluded that 3 at once train at 152% of
one). Each trial therefore marks itself in a folder per GPU (a file named by its pid, stale ones of
dead processes removed) from the end of its first step to its own end, evaluations and checkpoints
included, and a rate counts only over steps that saw one and the same number of marks. A peer still
loading or compiling (CPU work, besides one step) is not counted; a killed trial's pid, reused by a
new process before the next count removed its mark, would be (a rare overcount).

**Reused workers take no turn.** A worker that compiled a trial before (a reused one; noted by the
process itself, as `torch._dynamo.reset()` clears Dynamo's timers) compiles its next trial
from its process's warm caches and compile workers: 4-6 s on a fresh H100 (issue 30, sixteenth session),
where it had waited 4.9-5.9 s for a fresh worker's 22 s compile to end first. The turn spreads out a
first wave; a reused worker's trial starts when another ended, already apart from its peers.

**How many turns.** `QLORA_SWEEP_COMPILE_TURNS` trials of a GPU may compile at once (default 1). A
fresh node's first compile leaves the GPU idle whatever the count (nothing trains yet); with 2, the
second trial compiles beside it instead of after it, at the cost of sharing the CPU with it.

A turn is waited for at most TURN_WAIT_S: a holder that hangs (the kernel only drops the lock of one
that dies) would otherwise hold every compiled trial of its GPU; past that the trial compiles anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from evaluation.errors import ConfigError

log = logging.getLogger(__name__)
TURN_WAIT_S = 600.0  # longer than any compile seen (a fresh worker's: 8-21 s on an H100)
TURNS_ENV = "QLORA_SWEEP_COMPILE_TURNS"
POLL_S = 0.2  # how often a waiting trial looks for a free turn among several (one is simply waited on)


def gpu_uuid(device: torch.device) -> str:
    """The GPU's UUID: the same in every process of the node, whatever CUDA_VISIBLE_DEVICES numbers it."""
    return str(torch.cuda.get_device_properties(device).uuid)


# Whether this process has run a compiled first step (not Dynamo's own timers: reset() clears them).
_compiled_here = False


def compiled_here() -> None:
    """Note that this process has compiled a trial (after its first compiled step): it is a reused
    worker from now on, with warm caches, and takes no turn."""
    global _compiled_here
    _compiled_here = True


def takes_turn(peers: bool, compiles: bool) -> bool:
    """Whether a trial's first step waits for its GPU's compile turn: a compiled single-worker trial on a
    GPU (`peers`) in a process that has not compiled a trial before."""
    return peers and compiles and not _compiled_here


class Turn:
    """One of the compile turns of a GPU: `acquire` takes whichever is free (or raises filelock's
    Timeout); a context manager that holds one for its block."""

    def __init__(self, cache: Path, uuid: str, turns: int):
        cache.mkdir(parents=True, exist_ok=True)
        names = [f"compile-turn-{uuid}.lock"] + [f"compile-turn-{uuid}-{i}.lock" for i in range(1, turns)]
        self.locks = [FileLock(str(cache / name)) for name in names]
        self.held: FileLock | None = None

    def acquire(self, timeout: float) -> Turn:
        # Held already: filelock would count a second hold, and keep the file locked after one release.
        if self.held is not None:
            return self
        if len(self.locks) == 1:
            self.locks[0].acquire(timeout=timeout)
            self.held = self.locks[0]
            return self
        deadline = time.monotonic() + timeout
        while True:
            for lock in self.locks:
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                self.held = lock
                return self
            if time.monotonic() >= deadline:
                raise Timeout(self.locks[0].lock_file)
            time.sleep(POLL_S)

    def release(self) -> None:
        if self.held is not None:
            self.held.release()
            self.held = None

    def __enter__(self) -> Turn:
        return self if self.held is not None else self.acquire(TURN_WAIT_S)

    def __exit__(self, *exc) -> None:
        self.release()


def compile_turns() -> int:
    """How many trials of a GPU may compile at once: $QLORA_SWEEP_COMPILE_TURNS, else 1 (the sweep's
    preflight checks it before any trial starts)."""
    value = os.environ.get(TURNS_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(TURNS_ENV, value, "a whole number of turns, 1 or more")
    return int(value)


def gpu_turn(cache: Path, uuid: str, turns: int | None = None) -> Turn:
    """A compile turn of the GPU `uuid` names, one of `turns` (default: `compile_turns()`)."""
    return Turn(cache, uuid, compile_turns() if turns is None else turns)


@contextlib.contextmanager
def holding(turn: Turn | None, waiting: contextlib.AbstractContextManager) -> Iterator[None]:
    """Hold `turn` for the block (no turn: just run it); `waiting` is entered while waiting for it
    (a trial's phase timer, so that the wait is a phase of its own and not part of the compile)."""
    if turn is None:
        yield
        return
    try:
        with waiting:
            turn.acquire(timeout=TURN_WAIT_S)
    except Timeout:
        log.warning("the GPU's compile turn was held for over %.0f s: compiling without it", TURN_WAIT_S)
        yield
        return
    try:
        yield
    finally:
        turn.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class Trainers:
    """This process's mark as a trainer on the GPU `uuid` while entered; `count()` is how many
    processes of the node are marked on it now (this one included when entered)."""

    def __init__(self, cache: Path, uuid: str):
        self.folder = cache / f"training-{uuid}"
        self.mark = self.folder / str(os.getpid())

    def __enter__(self) -> Trainers:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mark.touch()
        return self

    def __exit__(self, *exc) -> None:
        self.mark.unlink(missing_ok=True)

    def count(self) -> int:
        """Marks of living processes; a dead one's (a killed trial's) is removed on the way."""
        try:
            marks = [m for m in self.folder.iterdir() if m.name.isdigit()]
        except FileNotFoundError:
            return 0
        living = 0
        for m in marks:
            if _alive(int(m.name)):
                living += 1
            else:
                m.unlink(missing_ok=True)
        return living


class RateWindow:
    """The steady rate of the steps since the last `restart`, and whether one number of trainers saw
    them all (`sharing`: that number, else None)."""

    def __init__(self):
        self.restart(0, 0.0)

    def restart(self, tokens: int, train_s: float) -> None:
        self.tokens0, self.train_s0, self.counts = tokens, train_s, set()

    def saw(self, trainers: int) -> None:
        self.counts.add(trainers)

    @property
    def sharing(self) -> int | None:
        return next(iter(self.counts)) if len(self.counts) == 1 else None

    def rate(self, tokens: int, train_s: float) -> float | None:
        """Tokens per second of the window's steps (None before any step)."""
        seconds = train_s - self.train_s0
        return (tokens - self.tokens0) / seconds if self.counts and seconds > 0 else None
