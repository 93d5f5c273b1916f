"""FSDP trials on the CPU (gloo, 2 processes): sharded 4-bit base, a step equal to one worker's, resume."""

import json

import pytest
import torch
from bitsandbytes.nn import Linear4bit
from helpers import one_step_cfg, spawn_gloo
from safetensors.torch import load_file

from trainables.checkpoint import full_state, save_checkpoint
from trainables.model import attach_lora, load_adapter, load_base_model, load_tokenizer
from trainables.reporting import PrintReporter
from trainables.sharding import local_fraction, shard_model
from trainables.trial import run_trial

pytestmark = pytest.mark.slow


def _cfg(tiny, *sets):
    return one_step_cfg(tiny, "quantization.bits=4", *sets)


def _quantized(model):
    """The packed 4-bit weights (DTensors once sharded)."""
    return [m.weight for m in model.modules() if isinstance(m, Linear4bit)]


def _shard_and_save(rank, tiny, out):
    """Shard a 4-bit model with a non-zero adapter, record this rank's share and logits, save the adapter."""
    cfg = _cfg(tiny)
    model = attach_lora(load_base_model(cfg.model, cfg.quantization, shardable=True), cfg.lora, seed=0)
    with torch.no_grad():  # LoRA B starts at zero: give the adapter an effect worth checking
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    shard_model(model)
    quantized = _quantized(model)
    local_bytes = sum(p.to_local().numel() * p.element_size() for p in quantized)
    ids = torch.arange(3, 35).reshape(2, 16)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    gathered = full_state(model, optimizer)  # every rank: an all-gather
    if rank == 0:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        save_checkpoint(
            out / "ckpt", model, load_tokenizer(cfg.model), optimizer, scheduler, {"step": 0}, gathered
        )
        torch.save(logits, out / "logits.pt")
    (out / f"rank{rank}.json").write_text(
        json.dumps({"local_bytes": local_bytes, "n": len(quantized), "fraction": local_fraction(quantized)})
    )


def test_fsdp_shards_the_4bit_base_and_saves_a_loadable_adapter(tiny_model_dir, tmp_path):
    spawn_gloo(_shard_and_save, str(tiny_model_dir), tmp_path)
    cfg = _cfg(tiny_model_dir)
    plain = load_base_model(cfg.model, cfg.quantization)  # uint8 storage, not sharded: what users load
    whole = sum(p.numel() * p.element_size() for p in _quantized(plain))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["n"] == 14 for r in ranks)  # 2 layers x 7 projections, all 4-bit and all sharded
    for r in ranks:  # each worker holds half of the packed 4-bit weights
        assert r["fraction"] == pytest.approx(0.5, abs=0.01)
        assert r["local_bytes"] == pytest.approx(whole / 2, rel=0.01)
    assert sum(r["local_bytes"] for r in ranks) == whole
    loaded = load_adapter(plain, tmp_path / "ckpt" / "adapter")
    with torch.no_grad():
        logits = loaded(input_ids=torch.arange(3, 35).reshape(2, 16)).logits
    torch.testing.assert_close(logits, torch.load(tmp_path / "logits.pt"), rtol=1e-4, atol=1e-4)


def _train(rank, tiny, out, sets, stop, shared):
    class StopAfter(PrintReporter):
        def report(self, metrics, checkpoint):
            super().report(metrics, checkpoint)
            (out / f"history{rank}.json").write_text(json.dumps(self.history))
            if metrics["step"] == stop:
                raise SystemExit(0)

    out.mkdir(parents=True, exist_ok=True)
    try:
        run_trial(
            _cfg(tiny, *sets),
            StopAfter(out / ("shared" if shared else f"rank{rank}"), echo=lambda _: None),
            strategy="fsdp",
        )
    except SystemExit:
        pass


def _adapter(ckpt):
    return load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))


def test_one_fsdp_step_on_two_workers_equals_one_worker(tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    odd = ["training.eval_batches=3"]  # 2 eval batches on rank 0, 1 on rank 1: forwards must stay in step
    single = PrintReporter(tmp_path / "single", echo=lambda _: None)
    run_trial(_cfg(tiny_model_dir, *odd), single, strategy="fsdp")  # one worker: nothing to shard
    spawn_gloo(_train, str(tiny_model_dir), tmp_path, odd, 0, False)
    one = _adapter(single.checkpoint_dir(1))
    two = _adapter(tmp_path / "rank0" / "checkpoints" / "step-0000001")
    assert not (tmp_path / "rank1" / "checkpoints").exists()  # only rank 0 writes the adapter
    assert one.keys() == two.keys()
    for key in one:  # as in the DDP test: 1% of Adam's first step (~lr)
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-4)
    assert any(v.abs().sum() > 0 for k, v in one.items() if "lora_B" in k)
    a = single.history[-1]
    b = json.loads((tmp_path / "history0.json").read_text())[-1]
    assert b["workers"] == 2 and a["workers"] == 1
    for key in ("train_loss", "eval_loss", "base_eval_loss"):
        assert abs(a[key] - b[key]) < 1e-4 * abs(a[key]), (key, a[key], b[key])


def test_fsdp_trial_learns_and_resumes(tiny_model_dir, tmp_path):
    sets = [
        "training.max_steps=4",
        "training.eval_interval=2",
        "training.lr=5e-3",
        "training.grad_accum=1",
        "generation.num_prompts=2",
        "generation.max_new_tokens=4",
    ]
    spawn_gloo(
        _train, str(tiny_model_dir), tmp_path / "a", sets, 2, True
    )  # interrupted after step 2's checkpoint
    spawn_gloo(_train, str(tiny_model_dir), tmp_path / "a", sets, 0, True)  # resumed from it
    spawn_gloo(_train, str(tiny_model_dir), tmp_path / "b", sets, 0, True)  # straight through
    resumed = json.loads((tmp_path / "a" / "history0.json").read_text())
    straight = json.loads((tmp_path / "b" / "history0.json").read_text())
    assert [m["step"] for m in resumed] == [4] and [m["step"] for m in straight] == [2, 4]
    losses = [m["eval_loss"] for m in straight]
    assert losses[-1] < losses[0] < straight[0]["base_eval_loss"]  # the loss goes down
    final = tmp_path / "b" / "shared" / "checkpoints" / "step-0000004"
    assert (final / "eval" / "generations.json").is_file()  # generated on the sharded model, in step
    a, b = _adapter(tmp_path / "a" / "shared" / "checkpoints" / "step-0000004"), _adapter(final)
    for key in a:  # optimizer moments, scheduler and data order restored: the same adapter
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
