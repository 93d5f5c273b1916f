"""The run plan (issue 30): how a trial runs for the memory it has, from one function that the trial
and `qlora-sweep plan` share; measured figures replace the built-in ones."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import OPEN_LLAMA, SMOLLM2_SHAPE
from transformers import AutoConfig

from trainables.compile_policy import COMPILE_S, decide_compile
from trainables.config import TrialConfig
from trainables.memory import estimate
from trainables.model import count_trainable_params_for
from trainables.node_stats import NodeStats, load_stats, record
from trainables.run_plan import (
    HEADROOM,
    LEAN_BUDGETS,
    _candidates,
    _slowdown,
    plan_run,
    run_key,
    training_seconds,
)

OPEN_LLAMA_3B = AutoConfig.from_pretrained(OPEN_LLAMA)
N_PARAMS = 3_426_473_600
E2E_TOKENS = 60 * 16 * 512  # benchmarks/sweep_e2e.yaml: 60 steps of 16 x 512


def _trial(**training) -> TrialConfig:
    return TrialConfig.model_validate(
        {
            "lora": {"r": 16, "target_modules": "all-linear+lm_head"},
            "training": {"batch_size": 16, **training},
        }
    )


def _plan(
    cfg: TrialConfig, budget_gb: float, per_gpu: int = 1, stats: NodeStats | None = None, tokens=E2E_TOKENS
):
    trainable = count_trainable_params_for(OPEN_LLAMA_3B, cfg.lora)
    return plan_run(cfg, OPEN_LLAMA_3B, N_PARAMS, trainable, tokens, budget_gb, True, per_gpu, stats)


def test_the_estimate_follows_the_compile_decision():
    """Eager trials peaked at 46 GB where compiled ones took 23 (issue 30): the plan must know which."""
    cfg = _trial()
    trainable = count_trainable_params_for(OPEN_LLAMA_3B, cfg.lora)
    eager = estimate(cfg, OPEN_LLAMA_3B, trainable, False, compiled=False).total_gb
    compiled = estimate(cfg, OPEN_LLAMA_3B, trainable, False, compiled=True).total_gb
    assert eager > 1.8 * compiled - 2  # activations ~2.2x; weights and context the same
    forced_eager = _plan(_trial(compile=False), 80.0)
    forced_compiled = _plan(_trial(compile=True), 80.0)
    assert forced_eager.need_gb > 1.8 * forced_compiled.need_gb - 2
    assert not forced_eager.compile.compile and forced_compiled.compile.compile


@pytest.mark.parametrize("budget", [24.0, 40.0, 80.0, 12.0, 8.0])
def test_a_capped_trial_that_does_not_fit_is_planned_smaller(budget):
    """At every budget the plan fits, keeping the effective batch (16 rows a step)."""
    run = _plan(_trial(compile=False), budget)
    assert run.fits and run.need_gb <= HEADROOM * budget
    assert run.batch_size * run.grad_accum == 16
    full = _plan(_trial(compile=False), 1000.0)
    assert (full.batch_size, full.gradient_checkpointing) == (16, False)
    if full.need_gb > HEADROOM * budget:  # planned smaller: a smaller micro-batch, or checkpointing
        assert run.batch_size < 16 or run.gradient_checkpointing
    else:
        assert (run.batch_size, run.gradient_checkpointing) == (16, False)


def test_a_run_that_fits_nowhere_says_so():
    run = _plan(_trial(), 2.0)  # the 4-bit weights alone take ~2 GB
    assert not run.fits and "does NOT fit" in run.memory_reason()


def test_checkpointing_off_is_respected_and_the_micro_batch_shrinks_instead():
    run = _plan(_trial(compile=False, gradient_checkpointing="off"), 24.0)
    assert not run.gradient_checkpointing and run.batch_size < 16 and run.fits


def test_a_measured_peak_replaces_the_estimate():
    cfg = _trial(compile=True)
    first = _plan(cfg, 80.0)
    assert not first.measured
    key = run_key(cfg, True, False, 16)
    stats = NodeStats(peaks={key: 70.0})  # this GPU saw far more than the estimate
    second = _plan(cfg, 80.0, stats=stats)
    assert (
        second.measured
        and second.need_gb == 70.0
        and (second.batch_size, second.gradient_checkpointing) == (16, False)
    )
    third = _plan(cfg, 40.0, stats=stats)  # no longer fits at 40: planned leaner
    assert third.batch_size < 16 or third.gradient_checkpointing or third.activation_budget < 1
    assert not third.measured  # the lean run's own peak was never measured: its estimate
    # Its activations are a share of the full run's, whose measured peak (12% over the estimate for
    # all-linear on the H100) they scale from once this node has it.
    est = estimate(
        cfg.model_copy(update={"training": cfg.training.model_copy(update={"batch_size": 16})}),
        OPEN_LLAMA_3B,
        count_trainable_params_for(OPEN_LLAMA_3B, cfg.lora),
        False,
    )
    fixed, share = est.total_gb - est.activations_gb, LEAN_BUDGETS[0.9][0]
    lean = _plan(cfg, 60.0, stats=NodeStats(peaks={key: 70.0}))  # 1.0 does not fit, 0.9 does
    assert lean.activation_budget == 0.9 and lean.need_gb == pytest.approx(fixed + (70.0 - fixed) * share)


def test_a_compiled_run_lowers_its_activation_budget_before_anything_slower():
    """A seed-study trial (all-linear+lm_head, dropout 0.05, 16 x 512) peaked at 33.9 GB on an H100, 23.2
    at AOT autograd's activation budget 0.9 at the same speed: at a third of an 80 GB GPU the plan keeps
    16 x 512 without checkpointing and lowers the budget; an eager run, which has no such budget,
    gives up micro-batch or checkpointing instead."""
    cfg = _trial(compile=True, batch_size=4, grad_accum=4)
    cfg = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"dropout": 0.05})})
    full = _plan(cfg, 1000.0)
    assert (full.batch_size, full.grad_accum, full.activation_budget) == (16, 1, 1.0)
    third = _plan(cfg, 80.0 / 3, per_gpu=3)
    assert (third.batch_size, third.gradient_checkpointing) == (16, False)
    assert third.activation_budget < 1 and third.fits and third.need_gb < full.need_gb
    assert f"activation memory budget {third.activation_budget:g}" in third.describe()
    assert third.key(cfg) != run_key(cfg, True, False, 16)  # its peak is its own record
    assert run_key(cfg, True, False, 16, 1.0) == run_key(cfg, True, False, 16)  # older records still read
    at = {b: _plan(cfg, gb) for b, gb in ((0.9, 30.0), (0.6, 22.0))}  # 0.9 or 0.6 fits, not more
    assert [(run.batch_size, run.activation_budget) for run in at.values()] == [(16, 0.9), (16, 0.6)]
    # 0.9 trained at the same speed on the H100, 0.6 took 1.18x as long
    assert training_seconds(at[0.9]) == training_seconds(full) < training_seconds(at[0.6])
    eager = _plan(_trial(compile=False, batch_size=4, grad_accum=4), 80.0 / 3, per_gpu=3)
    assert eager.activation_budget == 1.0 and (eager.batch_size < 16 or eager.gradient_checkpointing)


def test_compile_is_decided_by_the_nodes_measured_figures():
    # Built-in H100 figures: the e2e trial (60 steps of 16 x 512) saves ~20 s for a ~30 s compile.
    alone = decide_compile("auto", True, True, N_PARAMS, E2E_TOKENS)
    assert not alone.compile and alone.saved_s < COMPILE_S
    # Three trials sharing the GPU: a compile idles it for ~1/3 of its seconds.
    shared = decide_compile("auto", True, True, N_PARAMS, E2E_TOKENS, per_gpu=3)
    assert shared.compile and "/ 3 sharing the GPU" in shared.reason
    # This node compiles in 9 s (warm inductor cache): compiling pays for a trial alone too.
    warm = decide_compile("auto", True, True, N_PARAMS, E2E_TOKENS, stats=NodeStats(compile_s=[9.0, 10.0]))
    assert warm.compile and "measured here: compile" in warm.reason
    # A GPU on which compiling barely helps: measured rates say so, and eager is chosen.
    flat = NodeStats(eager_flops=[1e15], compiled_flops=[1.05e15], compile_s=[9.0])
    assert not decide_compile("auto", True, True, N_PARAMS, E2E_TOKENS, stats=flat).compile


def test_node_stats_round_trip_and_keep_the_larger_peak(tmp_path):
    path = tmp_path / "node_stats" / "h100.json"
    record(path, peaks={"a": 10.0}, compile_s=12.0, eager_flops=None)
    record(path, peaks={"a": 8.0, "b": 3.0}, compile_s=14.0)
    stats = load_stats(path)
    assert (
        stats.peaks == {"a": 10.0, "b": 3.0} and stats.compile_s == [12.0, 14.0] and stats.eager_flops == []
    )
    assert NodeStats.median(stats.compile_s) == 13.0
    assert load_stats(tmp_path / "missing.json") == NodeStats()


def test_the_cpu_plan_checkpoints_by_host_memory_and_keeps_its_micro_batch():
    """The defaults (16 x 512) of a SmolLM2-sized model were killed at 21 GB on a 23 GB host without
    checkpointing; 4 rows fit."""

    def cpu_plan(cfg: TrialConfig):
        trainable = count_trainable_params_for(SMOLLM2_SHAPE, cfg.lora)
        return plan_run(cfg, SMOLLM2_SHAPE, 0, trainable, 10_000, 21.0, on_gpu=False)

    defaults = cpu_plan(TrialConfig.model_validate({}))
    assert defaults.gradient_checkpointing and defaults.batch_size == 16 and not defaults.compile.compile
    assert not cpu_plan(TrialConfig.model_validate({"training": {"batch_size": 4}})).gradient_checkpointing
    forced = cpu_plan(
        TrialConfig.model_validate({"training": {"batch_size": 4, "gradient_checkpointing": "on"}})
    )
    assert forced.gradient_checkpointing


def test_the_plan_is_applied_to_the_trial_config():
    run = _plan(_trial(compile=False), 24.0)
    cfg = run.applied(_trial(compile=False))
    t = cfg.training
    assert (t.batch_size, t.grad_accum) == (run.batch_size, run.grad_accum)
    assert t.gradient_checkpointing == ("on" if run.gradient_checkpointing else "off") and t.compile is False


@pytest.mark.parametrize("budget", [8.0, 12.0])
def test_checkpointing_off_at_small_budgets_shrinks_the_micro_batch_to_fit(budget):
    run = _plan(_trial(compile=False, gradient_checkpointing="off"), budget)
    assert run.fits and not run.gradient_checkpointing and run.batch_size * run.grad_accum == 16


def test_a_multi_worker_trial_keeps_its_micro_batch_and_ignores_node_measurements():
    """Workers of one trial plan alone and must agree: no smaller micro-batch (the trial also passes
    no node figures for several workers)."""
    cfg = _trial()
    trainable = count_trainable_params_for(OPEN_LLAMA_3B, cfg.lora)
    run = plan_run(cfg, OPEN_LLAMA_3B, N_PARAMS, trainable, E2E_TOKENS, 24.0, True, 1, None, regroup=False)
    assert run.batch_size == 16 and run.gradient_checkpointing and run.fits


def test_trials_per_gpu_follow_what_this_node_measured_sharing_to_give(tmp_path):
    """How many trials share a GPU: the built-in time-slicing loss until the node has measured what k
    compiled trials train together (each shared trial records its rate); then the measured gain."""
    from sweep.throughput import choose

    path = tmp_path / "node_stats" / "h100" / "model.json"
    record(path, compiled_flops=1.0e15)  # one trial alone
    record(path, shared_flops={3: 0.38e15})  # one of 3 sharing: 3 x 0.38 = 114% of alone
    record(path, shared_flops={3: 0.40e15}, compile_s=20.0)
    stats = load_stats(path)
    assert stats.sharing_gain(3) == pytest.approx(3 * 0.39) and stats.sharing_gain(6) is None

    def runs(stats):
        return {k: _plan(_trial(compile=True), 80.0 / k, k, stats) for k in range(1, 9)}

    built_in = choose(runs(None), 20.0)
    assert not built_in.gain_measured and built_in.gain < 1 and "time-slicing" in built_in.why()
    # Measured: 6 at once train at 130% of one alone, 3 now at 72% (median): six share the GPU.
    record(path, shared_flops={6: 1.3e15 / 6})
    record(path, shared_flops={3: 0.1e15})
    record(path, shared_flops={3: 0.1e15})
    stats = load_stats(path)
    measured = choose(runs(stats), 20.0, stats)
    assert measured.per_gpu == 6 and measured.gain_measured and measured.gain == pytest.approx(1.3)
    assert "measured here training at 130% of one alone" in measured.why()
    assert measured.run.fits and measured.run.need_gb <= HEADROOM * 80.0 / 6


def test_sharing_a_gpu_more_ways_does_not_count_a_slower_run_as_busier():
    """At a quarter of an 80 GB GPU the e2e sweep's r=8 all-linear trial fits only at activation budget
    0.6 (1.18x as long), at a third at full speed. Its slower steps keep the GPU busy longer without
    training more tokens: with the built-in figures, 3 share the GPU, not 4 (which the busy share
    alone would pick)."""
    from sweep.throughput import choose, efficiency

    cfg = TrialConfig.model_validate(
        {"lora": {"r": 8, "target_modules": "all-linear"}, "training": {"compile": True}}
    )
    runs = {k: _plan(cfg, 80.0 / k, k) for k in range(1, 9)}
    assert runs[3].slowdown == 1.0 and runs[4].slowdown > 1.0
    assert choose(runs, COMPILE_S).per_gpu == 3
    assert efficiency(4, 20.0, 40.0, 0.9, 1 / runs[4].slowdown) < efficiency(4, 20.0, 40.0, 0.9)


def test_an_eager_trial_alone_is_not_preferred_to_compiled_ones_sharing_the_gpu():
    """At a 24 GB cap, the e2e sweep's attention trial alone could run eager (a compile does not pay for
    one trial alone with the built-in figures), 3 sharing only compiled at a lean budget and a smaller
    micro-batch. Eager trains at less than half the compiled rate: the GPU is shared, compiled."""
    from sweep.throughput import choose

    cfg = TrialConfig.model_validate({"lora": {"r": 8, "target_modules": "attention"}})
    runs = {k: _plan(cfg, 24.0 / k, k) for k in range(1, 9)}
    assert not runs[1].compile.compile and runs[3].compile.compile and runs[3].slowdown > 1
    chosen = choose(runs, COMPILE_S)
    assert chosen.per_gpu > 1 and chosen.run.compile.compile


def test_a_small_configured_micro_batch_is_regrouped_into_the_fastest_run_that_fits():
    """The seed study's 4 rows x 4 micro-batches: the same 16 rows a step as 16 x 1 where it fits (8 x 512
    trained 27% slower than 16 x 512 on an H100), at a leaner activation budget or checkpointed where it
    does not, whichever the cost model says is faster; never past the default's 16 x 512 tokens. Each
    plan is the fastest candidate that fits: every faster one needs more than the budget."""
    seed = _trial(batch_size=4, grad_accum=4, compile=True)
    chosen = {}
    for budget in (80.0, 26.7, 20.0, 12.0, 6.0, 4.0):
        run = _plan(seed, budget, tokens=3 * 1_058_091)
        assert run.fits and run.batch_size * run.grad_accum == 16, (budget, run.describe())
        chosen[budget] = (run.batch_size, run.gradient_checkpointing, run.activation_budget)
        faster = [
            (b, ck, lean)
            for b, _, ck, lean in _candidates(seed, True, True)
            if _slowdown(seed, b, ck, lean) < run.slowdown
        ]
        for b, ck, lean in faster:
            sized = _trial(batch_size=b, grad_accum=16 // b, compile=True)
            est = estimate(sized, OPEN_LLAMA_3B, count_trainable_params_for(OPEN_LLAMA_3B, sized.lora), ck)
            need = est.total_gb - est.activations_gb * (1 - LEAN_BUDGETS[lean][0])
            assert need > HEADROOM * budget, (budget, b, ck, lean, need)
    assert chosen[80.0] == (16, False, 1.0)
    assert chosen[20.0] == (16, False, min(LEAN_BUDGETS))  # 1.18x as long: before checkpointing's 4/3
    assert chosen[6.0] == (16, True, 1.0)  # 4/3: before 8 x 512's 1.37x
    assert chosen[4.0][0] < 16 and chosen[4.0][1]  # the smallest share: smaller and checkpointed
    # Long rows: 4 x 2048 is already the default's tokens, so it is not regrouped.
    long = _plan(_trial(batch_size=4, grad_accum=4, max_seq_len=2048, compile=True), 80.0)
    assert (long.batch_size, long.grad_accum) == (4, 4)


def test_a_measured_out_of_memory_of_the_regrouped_run_plans_a_leaner_run():
    """An OOM records its run as not fitting (trainables/trial.py); the retry then plans leaner: the
    same grouping at lower activation budgets, then checkpointed (4/3 the time: before 8 x 512's 1.37x)."""
    seed = _trial(batch_size=4, grad_accum=4, compile=True)
    stats, runs = NodeStats(), []
    for _ in range(4):
        run = _plan(seed, 80.0, stats=stats)
        runs.append((run.batch_size, run.activation_budget, run.gradient_checkpointing))
        assert run.fits
        stats.peaks[run.key(seed)] = 80.0 + 0.6  # it ran out of memory
    assert runs == [(16, 1.0, False), (16, 0.9, False), (16, 0.6, False), (16, 1.0, True)]


@pytest.mark.parametrize("micro_batch", [16, 4])
def test_only_full_micro_batches_teach_the_node_its_rates(tmp_path, monkeypatch, micro_batch):
    """A trial's rate feeds the compile decision and the sharing gain, both judged at the default's
    16 x 512; a 4 x 512 run's rate (3 at once: 87% of one alone where 16 x 512 gave 122%, issue 30) is
    not recorded, its memory peak is. A rate goes under the number of trials that trained beside it
    (trainables/gpu_peers.py), not the share: alone, it is the compiled rate. No GPU here: its memory
    reading is faked."""
    import torch

    from trainables import trial as trial_mod

    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: 10 * 2**30)
    monkeypatch.setattr(trial_mod, "_node_stats_file", lambda cfg, device: tmp_path / "stats.json")
    monkeypatch.setattr(trial_mod, "_n_params", lambda path, revision: N_PARAMS)
    cfg = _trial(batch_size=micro_batch, grad_accum=16 // micro_batch, compile=True)
    # As the trial ran it (the plan would regroup 4 x 4 where it fits; on a small share it runs so).
    run = dataclasses.replace(
        _plan(cfg, 26.7, per_gpu=3), batch_size=micro_batch, grad_accum=16 // micro_batch
    )
    metrics = {"train_tokens_per_s": 10_000.0, "phase_train_s": 30.0, "phase_first_step_s": 12.0}
    trial_mod._record_run(cfg, run, {**metrics, "compile_stages": "total 11.0s"}, torch.device("cuda"), 60)
    # A reused worker's trial of a shape it compiled before compiles nothing: no compile figure.
    trial_mod._record_run(cfg, run, {**metrics, "compile_stages": "none"}, torch.device("cuda"), 60)
    trial_mod._record_rate(cfg, run, torch.device("cuda"), 10_000.0, 3)
    trial_mod._record_rate(cfg, run, torch.device("cuda"), 30_000.0, 1)  # a share's trial that trained alone
    stats = load_stats(tmp_path / "stats.json")
    assert stats.peaks == {run.key(cfg): 10.6}  # the peak always (reserved + the CUDA context)
    assert stats.compile_s == [pytest.approx(11.5)]  # the first step's extra seconds, when it compiled
    full = micro_batch == 16
    assert stats.shared_flops == ({"3": [4.0 * N_PARAMS * 10_000.0]} if full else {})
    assert stats.compiled_flops == ([4.0 * N_PARAMS * 30_000.0] if full else [])
