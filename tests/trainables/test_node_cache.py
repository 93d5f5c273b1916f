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


def test_samples_decode_with_dense_weights_and_give_the_text_of_the_quantized_layers(
    tiny_model_dir, tmp_path, monkeypatch
):
    """`Samples` generates with each quantized layer's weight dequantized once (trainables/dense.py),
    the base's and the adapter's outputs in passes of their own (the adapter merged into the copies in
    its pass, never in the base's): the same text as the quantized layers give, and the layers are
    quantized again afterwards."""
    import bitsandbytes as bnb
    import torch
    from peft.tuners.lora import LoraLayer

    from trainables.dense import dense_weights

    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path / "cache"))
    for bits in (4, 8):
        cfg = cfg_for(tiny_model_dir, bits).model_copy(deep=True)
        # two batches (8 + 2 rows); never one row, which bitsandbytes' 4-bit layer runs through another
        # kernel (gemv: its own bf16 sums on CPUs with AVX512-BF16 and on GPUs)
        cfg.generation.num_prompts = 10
        trained = attach_lora(load_base_model(cfg.model, cfg.quantization), cfg.lora)
        torch.manual_seed(bits)
        for name, p in trained.named_parameters():
            if "lora_B" in name:  # B starts at zero: an adapter that changes the outputs
                torch.nn.init.normal_(p, std=0.5)
        trained.save_pretrained(tmp_path / f"adapter-{bits}")

        dense, layers = Samples(cfg), []

        def counted(*a, layers=layers, **k):  # how many layers each generation ran dense, and merged
            layers.append((_dense_count(a[0]), _dense_count(a[0], LoraLayer)))
            return generate(*a, **k)

        with monkeypatch.context() as m:
            m.setattr(evaluate, "generate", counted)
            records, base = dense.records(tmp_path / f"adapter-{bits}")
        quantized = [
            m for m in dense.model.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
        ]
        # base, then adapter: every layer dense, and in the adapter's pass each with its adapter merged in
        assert layers == [(len(quantized), 0), (len(quantized), len(quantized))] and quantized
        assert _dense_count(dense.model) == 0  # restored

        plain = Samples(cfg)  # the quantized layers' own outputs, base and adapter
        plain_base = generate(plain.model, plain.tokenizer, plain.prompts, cfg.generation)
        with dense_weights(plain.model, budget=0) as n:  # no room: nothing dequantized
            assert n == 0
        itemsize = plain.model.get_input_embeddings().weight.dtype.itemsize  # 4 on a CPU (fp32)
        all_layers = sum(m.in_features * m.out_features * itemsize for m in quantized)
        with dense_weights(plain.model, budget=all_layers - 1) as n:  # room for all copies but one byte
            assert 0 < n < len(quantized)
        assert [r["output"] for r in base] == plain_base
        adapter = evaluate.load_adapter(plain.model, tmp_path / f"adapter-{bits}")
        assert [r["output"] for r in records] == generate(
            adapter, plain.tokenizer, plain.prompts, cfg.generation
        )
        assert [r["output"] for r in records] != plain_base  # the adapter did change them


def _dense_count(model, kind=object) -> int:
    """Layers (of `kind`) whose forward `dense_weights` has replaced."""
    return sum(
        getattr(m.__dict__.get("forward"), "dense", False) for m in model.modules() if isinstance(m, kind)
    )
