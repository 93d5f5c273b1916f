"""Generate descriptions for a fixed, seeded set of held-out prompts, batched with left padding."""

from __future__ import annotations

import random

import torch

from evaluation.config import GenerationConfig
from evaluation.eager import eager_sdpa


def choose(rows: list[dict], cfg: GenerationConfig) -> list[dict]:
    """The same held-out rows for every trial of a sweep (seeded), so outputs compare side by side."""
    rows = sorted(rows, key=lambda r: (r["product"], r["description"]))
    return random.Random(cfg.seed).sample(rows, min(cfg.num_prompts, len(rows)))


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    cfg: GenerationConfig,
    batch_size: int = 8,
) -> list[str]:
    """Continuations of `prompts` (prompt text stripped), at most `cfg.max_new_tokens` tokens each."""
    if not prompts:
        return []
    device = next(model.parameters()).device
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    torch.manual_seed(cfg.seed)
    outputs: list[str] = []
    try:
        with eager_sdpa(model):  # no recompile per generation length (evaluation/eager.py)
            for i in range(0, len(prompts), batch_size):
                enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(device)
                kwargs = {"temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.do_sample else {}
                out = model.generate(
                    **enc,
                    max_new_tokens=cfg.max_new_tokens,
                    do_sample=cfg.do_sample,
                    repetition_penalty=cfg.repetition_penalty,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    use_cache=True,
                    **kwargs,
                )
                new = out[:, enc["input_ids"].shape[1] :]
                outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return outputs


def records(rows: list[dict], prompts: list[str], outputs: list[str]) -> list[dict]:
    """What a person (and the judge) reads of each generation: the row, its prompt, the output, the reference."""
    return [
        {
            "product": r["product"],
            "category": r["category"],
            "prompt": p,
            "output": o,
            "reference": r["description"],
            "length": len(o.split()),
        }
        for r, p, o in zip(rows, prompts, outputs)
    ]


def with_outputs(records: list[dict], outputs: list[str]) -> list[dict]:
    """The same prompts' records with other outputs (the base model's, beside a trial's)."""
    return [{**rec, "output": o, "length": len(o.split())} for rec, o in zip(records, outputs)]
