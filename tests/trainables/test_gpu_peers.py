"""The trials of one GPU see each other (trainables/gpu_peers.py): compile turns hold across processes,
per GPU, and the wait is a phase of its own; trainers are counted per GPU, and a rate counts only for
steps that saw one number of them."""

import contextlib
import multiprocessing

import pytest
import torch
from filelock import Timeout

from evaluation.errors import ConfigError
from trainables.gpu_peers import RateWindow, Trainers, gpu_turn, holding, takes_turn
from trainables.phases import PhaseTimer


def _enter_and_wait(kind, cache, uuid, entered, done):  # another trial's process, until told
    with (
        gpu_turn(cache, uuid, 2)
        if kind == "turns"
        else (gpu_turn if kind == "turn" else Trainers)(cache, uuid)
    ):
        entered.set()
        done.wait(60)


@contextlib.contextmanager
def _another_process(kind, cache, uuid):
    """Another process holding the GPU's compile turn ("turn"), one of its two ("turns"), or training on
    it ("trainer")."""
    ctx = multiprocessing.get_context("spawn")
    entered, done = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_enter_and_wait, args=(kind, cache, uuid, entered, done))
    other.start()
    try:
        assert entered.wait(60)
        yield
    finally:
        done.set()
        other.join(60)
    assert other.exitcode == 0


def test_a_turn_held_by_another_process_keeps_that_gpu_waiting_and_no_other(tmp_path):
    with _another_process("turn", tmp_path, "GPU-a"):
        with pytest.raises(Timeout):
            gpu_turn(tmp_path, "GPU-a").acquire(timeout=0)
        with gpu_turn(tmp_path, "GPU-b").acquire(timeout=0):  # another GPU's turn is free
            pass
    with gpu_turn(tmp_path, "GPU-a").acquire(timeout=0):  # the holder is gone: free again
        pass


def test_the_wait_is_timed_as_its_own_phase_and_the_turn_freed_after_the_block(tmp_path):
    timer = PhaseTimer()
    with holding(gpu_turn(tmp_path, "GPU-a"), timer("compile_wait")), timer("first_step"):
        with pytest.raises(Timeout):  # held: another holder (the lock file opened again) cannot take it
            gpu_turn(tmp_path, "GPU-a").acquire(timeout=0)
    assert set(timer.seconds) == {"compile_wait", "first_step"}
    with gpu_turn(tmp_path, "GPU-a").acquire(timeout=0):
        pass
    no_turn = PhaseTimer()
    with holding(None, no_turn("compile_wait")), no_turn("first_step"):
        pass
    assert set(no_turn.seconds) == {"first_step"}


def test_trainers_counts_the_processes_training_on_a_gpu_now(tmp_path):
    me = Trainers(tmp_path, "GPU-a")
    assert me.count() == 0
    with _another_process("trainer", tmp_path, "GPU-a"):
        with me:
            assert me.count() == 2
            assert Trainers(tmp_path, "GPU-b").count() == 0  # another GPU's trainers are apart
        assert me.count() == 1
    assert me.count() == 0
    # A killed trainer's mark stays behind, but a dead pid does not count.
    stale = multiprocessing.get_context("spawn").Process(target=int)
    stale.start()
    stale.join(60)
    (tmp_path / "training-GPU-a" / str(stale.pid)).touch()
    assert me.count() == 0
    assert not (tmp_path / "training-GPU-a" / str(stale.pid)).exists()  # and removed


def test_a_window_gives_a_rate_only_for_steps_that_saw_one_number_of_trainers():
    window = RateWindow()
    window.restart(tokens=1000, train_s=10.0)
    assert window.rate(1000, 10.0) is None  # no step yet
    window.saw(3)
    window.saw(3)
    assert window.sharing == 3 and window.rate(9000, 14.0) == 2000.0
    window.saw(1)  # one of the three finished (or was still compiling) during the window
    assert window.sharing is None
    window.restart(tokens=9000, train_s=14.0)
    window.saw(1)
    assert window.sharing == 1 and window.rate(12000, 15.0) == 3000.0


def test_a_turn_held_too_long_is_given_up_and_the_trial_goes_on(tmp_path, monkeypatch, caplog):
    """A holder that hangs keeps its lock (the kernel drops only a dead one's): past TURN_WAIT_S the
    trial compiles without the turn instead of waiting for ever."""
    from trainables import gpu_peers

    monkeypatch.setattr(gpu_peers, "TURN_WAIT_S", 0.05)
    timer = PhaseTimer()
    ran = False
    with _another_process("turn", tmp_path, "GPU-a"):
        with holding(gpu_turn(tmp_path, "GPU-a"), timer("compile_wait")), timer("first_step"):
            ran = True
    assert ran and "compiling without it" in caplog.text
    assert timer.seconds["compile_wait"] >= 0.05


def test_only_a_compiled_gpu_trial_in_a_process_that_never_compiled_takes_a_turn(monkeypatch):
    from trainables import gpu_peers

    monkeypatch.setattr(gpu_peers, "_compiled_here", False)  # a fresh worker
    assert takes_turn(peers=True, compiles=True)
    assert not takes_turn(peers=False, compiles=True)  # CPU, or a multi-worker trial
    assert not takes_turn(peers=True, compiles=False)  # eager
    gpu_peers.compiled_here()  # its first compiled step ran: a reused worker from now on
    torch._dynamo.reset()  # as a new activation budget or many kept graphs do: it stays a reused worker
    assert not takes_turn(peers=True, compiles=True)


def test_with_two_turns_a_second_trial_compiles_beside_the_first_and_a_third_waits(tmp_path, monkeypatch):
    with _another_process("turns", tmp_path, "GPU-a"):
        with gpu_turn(tmp_path, "GPU-a", 2).acquire(timeout=0):  # the second turn is free
            with pytest.raises(Timeout):  # both are held
                gpu_turn(tmp_path, "GPU-a", 2).acquire(timeout=0.3)
            with pytest.raises(Timeout):  # a one-turn trial of that GPU waits too (the first turn is held)
                gpu_turn(tmp_path, "GPU-a", 1).acquire(timeout=0)
        monkeypatch.setenv("QLORA_SWEEP_COMPILE_TURNS", "2")
        with gpu_turn(tmp_path, "GPU-a").acquire(timeout=0):  # the count comes from the environment
            pass
    monkeypatch.setenv("QLORA_SWEEP_COMPILE_TURNS", "0")
    with pytest.raises(ConfigError, match="QLORA_SWEEP_COMPILE_TURNS.*'0'.*1 or more"):
        gpu_turn(tmp_path, "GPU-a")
