"""Compiled trials of one GPU take turns at their first step (trainables/gpu_turn.py): the turn holds
across processes, per GPU, and the wait is a phase of its own."""

import multiprocessing

from filelock import Timeout

from trainables.gpu_turn import gpu_turn, holding
from trainables.phases import PhaseTimer


def _hold(cache, uuid, held, done):  # another trial's process, holding its GPU's turn until told
    with gpu_turn(cache, uuid):
        held.set()
        done.wait(60)


def test_a_turn_held_by_another_process_keeps_that_gpu_waiting_and_no_other(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    held, done = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(tmp_path, "GPU-a", held, done))
    other.start()
    try:
        assert held.wait(60)
        try:
            gpu_turn(tmp_path, "GPU-a").acquire(timeout=0)
            raise AssertionError("GPU-a's turn was taken twice")
        except Timeout:
            pass
        with gpu_turn(tmp_path, "GPU-b").acquire(timeout=0):  # another GPU's turn is free
            pass
    finally:
        done.set()
        other.join(60)
    assert other.exitcode == 0
    with gpu_turn(tmp_path, "GPU-a").acquire(timeout=0):  # the holder is gone: free again
        pass


def test_the_wait_is_timed_as_its_own_phase_and_the_turn_freed_after_the_block(tmp_path):
    timer = PhaseTimer()
    with holding(gpu_turn(tmp_path, "GPU-a"), timer("compile_wait")), timer("first_step"):
        try:  # held: another holder (a lock file opened again) cannot take it
            gpu_turn(tmp_path, "GPU-a").acquire(timeout=0)
            raise AssertionError("the turn was not held in the block")
        except Timeout:
            pass
    assert set(timer.seconds) == {"compile_wait", "first_step"}
    with gpu_turn(tmp_path, "GPU-a").acquire(timeout=0):
        pass
    no_turn = PhaseTimer()
    with holding(None, no_turn("compile_wait")), no_turn("first_step"):
        pass
    assert set(no_turn.seconds) == {"first_step"}
