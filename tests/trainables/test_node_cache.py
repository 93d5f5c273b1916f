"""The base model's sample outputs are generated once per node, whoever needs them first: the sweep's
sampler (trainables.evaluate.Samples) or a judged trial (adapter disabled)."""

import json

from evaluation.generation import generate
from trainables import evaluate
from trainables.config import load_trial_config
from trainables.evaluate import Samples
from trainables.model import attach_lora, load_base_model, load_tokenizer
from trainables.trial import _base_generations


def cfg_for(tiny_model_dir, bits):
    return load_trial_config(
        None,
        [
            f"model.path={tiny_model_dir}",
            f"quantization.bits={bits}",
            "training.max_seq_len=256",
            "generation.num_prompts=2",
            "generation.max_new_tokens=8",
        ],
    )


def test_the_base_outputs_are_generated_once_per_node(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path))  # an empty node cache
    cfg = cfg_for(tiny_model_dir, 4)
    first = Samples(cfg)
    outputs = first.base_outputs()
    assert not first.base_shared and len(outputs) == 2
    files = list((tmp_path / "base_generations").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == outputs

    again = Samples(cfg)  # a later sweep's sampler on this node
    assert again.base_outputs() == outputs and again.base_shared

    # a judged trial asks with its adapter disabled: the same base, so the same entry
    trial_model = attach_lora(load_base_model(cfg.model, cfg.quantization), cfg.lora)
    tokenizer = load_tokenizer(cfg.model)
    assert _base_generations(cfg, trial_model, tokenizer, first.prompts, lockstep=False) == outputs
    assert list((tmp_path / "base_generations").glob("*.json")) == files

    other = Samples(cfg_for(tiny_model_dir, 8))  # another base (8-bit): its own outputs
    other.base_outputs()
    assert not other.base_shared and len(list((tmp_path / "base_generations").glob("*.json"))) == 2


def test_base_and_adapter_outputs_made_in_one_batch_equal_those_made_apart(
    tiny_model_dir, tmp_path, monkeypatch
):
    """With the base's outputs not yet on the node, `records` makes them in the adapter's own batches
    (peft's mixed-adapter batches, issue 30): the same text as the base's and the adapter's apart."""
    import torch

    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path / "cache"))
    for bits in (4, 8):
        cfg = cfg_for(tiny_model_dir, bits).model_copy(deep=True)
        cfg.generation.num_prompts = 9  # 18 rows: two batches of 16 and 2, each holding both
        trained = attach_lora(load_base_model(cfg.model, cfg.quantization), cfg.lora)
        torch.manual_seed(bits)
        for name, p in trained.named_parameters():
            if "lora_B" in name:  # B starts at zero: an adapter that changes the outputs
                torch.nn.init.normal_(p, std=0.5)
        trained.save_pretrained(tmp_path / f"adapter-{bits}")

        together, calls = Samples(cfg), []
        with monkeypatch.context() as m:  # the rows of each generation `records` makes
            m.setattr(
                evaluate, "generate", lambda *a, seen=calls, **k: seen.append(a[2]) or generate(*a, **k)
            )
            records, base = together.records(tmp_path / f"adapter-{bits}")
        assert calls == [[p for p in together.prompts for _ in range(2)]]  # one generation, both in it
        assert not together.base_shared  # made here, in the adapter's batches, and kept for the node
        apart = Samples(cfg)
        apart_base = generate(apart.model, apart.tokenizer, apart.prompts, cfg.generation)  # the bare base
        apart_records, _ = apart.records(tmp_path / f"adapter-{bits}")  # the adapter's alone: base cached
        assert apart.base_shared and apart_base == [r["output"] for r in base]
        assert [r["output"] for r in records] == [r["output"] for r in apart_records]
        assert [r["output"] for r in records] != apart_base  # the adapter did change them
