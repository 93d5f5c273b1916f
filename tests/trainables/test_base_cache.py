"""A worker process reuses its base model across trials (issue 22), and that changes nothing but time."""

import json
import os
import subprocess
import sys
from pathlib import Path

from trainables import base_cache
from trainables.config import load_trial_config
from trainables.phases import PHASES
from trainables.reporting import PrintReporter
from trainables.trial import run_trial

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    "data.eval_rows=40",
    "training.batch_size=4",
    "training.max_seq_len=256",
    "training.lr=3e-3",
    "generation.max_new_tokens=8",
    "quantization.bits=4",
    "training.max_steps=6",
    "training.eval_interval=3",
    "generation.num_prompts=1",
]


def tiny_cfg(tiny_model_dir, *sets):
    return load_trial_config(None, [f"model.path={tiny_model_dir}", *sets])


SECOND = ["lora.r=16", "lora.target_modules=all-linear"]


def test_second_trial_reuses_the_base_and_trains_as_in_a_fresh_process(tiny_model_dir, tmp_path):
    base_cache.drop_held()
    before = base_cache.counts()
    first = run_trial(
        tiny_cfg(tiny_model_dir, *SETS, "lora.r=4", "lora.target_modules=attention"),
        PrintReporter(tmp_path / "a", echo=lambda _: None),
    )
    second = run_trial(
        tiny_cfg(tiny_model_dir, *SETS, *SECOND), PrintReporter(tmp_path / "b", echo=lambda _: None)
    )
    after = base_cache.counts()
    assert (first["base_reused"], second["base_reused"]) == (False, True)
    assert after["loads"] - before["loads"] == 1 and after["reuses"] - before["reuses"] == 1
    for name in PHASES:  # every phase is reported, and the reused base was not loaded again
        assert f"phase_{name}_s" in second
    assert second["phase_train_s"] > 0 and second["fixed_s"] > 0
    assert second["phase_load_s"] < first["phase_load_s"]

    # The same config in a fresh process (nothing held, nothing compiled before it), same seed.
    code = (
        "import json, sys; from trainables.config import load_trial_config; "
        "from trainables.reporting import PrintReporter; from trainables.trial import run_trial; "
        f"cfg = load_trial_config(None, ['model.path=' + sys.argv[1], *{SETS + SECOND!r}]); "
        "m = run_trial(cfg, PrintReporter(sys.argv[2], echo=lambda _: None)); "
        "print(json.dumps({'eval_loss': m['eval_loss'], 'base_reused': m['base_reused']}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_dir), str(tmp_path / "fresh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["base_reused"] is False
    assert abs(fresh["eval_loss"] - second["eval_loss"]) < 1e-4, (fresh, second["eval_loss"])
    assert second["eval_loss"] < second["base_eval_loss"]


def test_a_different_base_is_loaded_and_the_held_one_freed(tiny_model_dir, tmp_path):
    base_cache.drop_held()
    run_trial(tiny_cfg(tiny_model_dir, *SETS), PrintReporter(tmp_path / "a", echo=lambda _: None))
    other = run_trial(
        tiny_cfg(tiny_model_dir, *SETS, "quantization.bits=16"),
        PrintReporter(tmp_path / "b", echo=lambda _: None),
    )
    assert other["base_reused"] is False  # 16-bit is another base: loaded, the 4-bit one dropped


def _compiled_trial(tiny_model_dir, lora, compiled: bool = True, budget: float = 1.0, backend="aot_eager"):
    """One trial's compiled forward and backward on the worker's held base (bits 16, CPU): the graphs it
    compiled, its output, its LoRA gradients and the bytes saved for backward. `aot_eager`: dynamo's
    guards and AOT autograd as a sweep compiles them, without Inductor's C++ build;
    `aot_eager_decomp_partition` adds the partitioner that honours the activation memory budget."""
    import torch
    from torch._dynamo.utils import counters

    from trainables.config import ModelConfig, QuantizationConfig
    from trainables.model import attach_lora, compile_decoder_layers

    model_cfg, q, device = (
        ModelConfig(path=str(tiny_model_dir)),
        QuantizationConfig(bits=16),
        torch.device("cpu"),
    )
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    base, _ = base_cache.acquire_base(model_cfg, q, device, "sdpa")
    model = attach_lora(base, lora, seed=1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # as after some training: B leaves zero
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(2))
    if compiled:
        base_cache.use_activation_budget(budget)
        compile_decoder_layers(model, backend=backend)
    graphs = counters["stats"]["unique_graphs"]
    model.eval()  # dropout off: the eager reference must compute the same function
    saved = []  # bytes of each tensor saved for backward (a compiled graph saves through autograd too)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.nbytes) or t, lambda t: t):
        out = model.get_base_model().get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    out.float().pow(2).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    new = counters["stats"]["unique_graphs"] - graphs
    base_cache.release_base(model, model_cfg, q, device, "sdpa")
    return new, out.detach(), grads, sum(saved)


def test_a_reused_worker_keeps_its_compiled_graphs_for_the_next_trial_of_a_shape(tiny_model_dir):
    """Dynamo guards a compiled decoder layer on the modules' shapes and settings, not on the LoRA
    parameter objects: the next trial of the same shape on this worker's held base runs the graph
    compiled before (no compile), another shape (rank, alpha, dropout) gets its own, and every one of
    them computes what the eager model does."""
    import torch

    from trainables.config import LoraConfig

    base_cache.drop_held()
    torch._dynamo.reset()
    r4 = LoraConfig(r=4, target_modules="all-linear")
    shapes = [
        r4,
        r4,
        LoraConfig(r=8, target_modules="all-linear"),
        r4.model_copy(update={"alpha": 4.0}),
        r4.model_copy(update={"dropout": 0.05}),
        r4,
    ]
    runs = [_compiled_trial(tiny_model_dir, lora) for lora in shapes]
    assert [run[0] for run in runs] == [1, 0, 1, 1, 1, 0]  # compiled once per shape, then reused
    for lora, (_, out, grads, _) in zip(shapes, runs, strict=True):
        _, eager_out, eager_grads, _ = _compiled_trial(tiny_model_dir, lora, compiled=False)
        assert torch.allclose(out, eager_out, atol=1e-6)
        assert all(torch.allclose(grads[n], eager_grads[n], atol=1e-6) for n in eager_grads)
    base_cache.drop_held()


def test_a_worker_forgets_its_graphs_once_many_have_piled_up(tiny_model_dir, monkeypatch):
    """Past MAX_KEPT_GRAPHS shapes the cache is emptied (before dynamo's per-code limit, where it would
    run new shapes eagerly): a shape seen before compiles again."""
    import torch

    from trainables.config import LoraConfig

    monkeypatch.setattr(base_cache, "MAX_KEPT_GRAPHS", 2)
    base_cache.drop_held()
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    monkeypatch.setattr(base_cache._HELD, "graphs_at_reset", counters["stats"]["unique_graphs"])
    r4, r8 = LoraConfig(r=4, target_modules="attention"), LoraConfig(r=8, target_modules="attention")
    assert [_compiled_trial(tiny_model_dir, lora)[0] for lora in (r4, r4, r8, r4)] == [1, 0, 1, 1]
    base_cache.drop_held()


def test_a_lower_activation_budget_saves_less_for_backward_and_computes_the_same(tiny_model_dir, monkeypatch):
    """The run plan lowers AOT autograd's activation memory budget before it shrinks a micro-batch
    (trainables/run_plan.py). Dynamo does not guard on the budget, so a worker's kept graphs are
    dropped when it changes: every trial's graphs save what its own budget allows, and each budget
    computes what the eager model does."""
    import torch
    from torch._dynamo.utils import counters

    from trainables.config import LoraConfig

    base_cache.drop_held()
    torch._dynamo.reset()
    monkeypatch.setattr(base_cache._HELD, "graphs_at_reset", counters["stats"]["unique_graphs"])
    lora = LoraConfig(r=4, target_modules="all-linear")
    budgets = [1.0, 1.0, 0.6, 0.6, 1.0]
    runs = [
        _compiled_trial(tiny_model_dir, lora, budget=b, backend="aot_eager_decomp_partition") for b in budgets
    ]
    assert [run[0] for run in runs] == [1, 0, 1, 0, 1]  # a new budget compiles; the same one reuses
    saved = {b: run[3] for b, run in zip(budgets, runs, strict=True)}
    assert saved[0.6] < 0.9 * saved[1.0]
    # Recomputing gives the very numbers it would have saved; the partitioner's decompositions differ
    # from eager kernels by float rounding (~4e-5 of a gradient's largest entry here).
    _, full_out, full_grads, _ = runs[0]
    _, eager_out, eager_grads, _ = _compiled_trial(tiny_model_dir, lora, compiled=False)
    assert torch.allclose(full_out, eager_out, atol=1e-5)
    assert all((full_grads[n] - g).abs().max() <= 1e-4 * g.abs().max() for n, g in eager_grads.items())
    for _, out, grads, _ in runs[1:]:
        assert torch.allclose(out, full_out, atol=1e-7)
        assert all(torch.allclose(grads[n], full_grads[n], atol=1e-7) for n in full_grads)
    base_cache.drop_held()
