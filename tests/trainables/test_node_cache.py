"""The base model's sample outputs are generated once per node, whoever needs them first: the sweep's
sampler (trainables.evaluate.Samples) or a judged trial (adapter disabled)."""

import json

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
