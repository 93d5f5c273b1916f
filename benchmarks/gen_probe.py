"""How fast the samples' generation decodes, and what a faster decode step would give (issue 30).

On the H100 of the fifteenth session, SmolLM2's 8-bit base took 10.1 s for 4 rows x 64 tokens and 10.0 s
for 8: launch-bound. This times `evaluation.generation.generate` for a base at `rows` rows, as loaded for
the samples (quantized layers), and again with each quantized layer's weight dequantized once into a plain
matmul (trainables/dense.py, what the samples now use; and whether its text is the same).

    python -m benchmarks.gen_probe --set model.path=/tmp/qlora-bench/model --set quantization.bits=4 [--rows 8 16]

With `--adapter DIR` (an adapter saved there first, all-linear r=16, random B), it times instead what the
driver's samples do after a sweep: the fifteenth session's one mixed-adapter batch of base and adapter rows
(quantized, peft's `adapter_names`), then `Samples.records` as now (dense weights, two passes).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from evaluation.generation import generate
from trainables.config import load_trial_config
from trainables.dense import dense_weights
from trainables.evaluate import Samples


def timed(s: Samples, rows: int) -> tuple[float, list[str]]:
    prompts = (s.prompts * rows)[:rows]
    start = time.perf_counter()
    out = generate(s.model, s.tokenizer, prompts, s.cfg.generation, batch_size=rows)
    sync()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--rows", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--adapter", default=None)
    a = ap.parse_args()
    if a.adapter:
        return samples(load_trial_config(None, a.sets), a.adapter)
    s = Samples(load_trial_config(None, a.sets))
    timed(s, 1)  # CUDA's and the kernels' first-use costs out of the rows below
    for rows in a.rows:
        quantized, q_out = timed(s, rows)
        with dense_weights(s.model) as n:
            fast, d_out = timed(s, rows)
        row = {
            "rows": rows,
            "new_tokens": s.cfg.generation.max_new_tokens,
            "quantized_s": round(quantized, 2),
        }
        print(
            json.dumps({**row, "dense_s": round(fast, 2), "dense_layers": n, "same_text": q_out == d_out}),
            flush=True,
        )


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def samples(cfg, adapter: str) -> None:
    """The samples' generation after a sweep, mixed batch (before) against two dense passes (now)."""
    from peft import PeftModel

    from trainables.model import attach_lora, load_base_model

    cfg = cfg.model_copy(deep=True)
    cfg.lora.r, cfg.lora.target_modules = 16, "all-linear"
    trained = attach_lora(load_base_model(cfg.model, cfg.quantization), cfg.lora)
    for name, p in trained.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    trained.save_pretrained(adapter)
    del trained
    s = Samples(cfg)
    timed(s, 1)  # first-use costs out
    model = PeftModel.from_pretrained(s.model, adapter)
    n, rows = len(s.prompts), [p for p in s.prompts for _ in range(2)]
    s.tokenizer.padding_side = "left"
    enc = s.tokenizer(rows, return_tensors="pt", padding=True).to(model.device)
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(
            **enc,
            max_new_tokens=cfg.generation.max_new_tokens,
            do_sample=False,
            pad_token_id=s.tokenizer.pad_token_id,
            adapter_names=["__base__", "default"] * n,
        )
    sync()
    mixed = time.perf_counter() - start
    s.model = model.unload()  # the bare base again, for `records` to load the adapter as the driver does
    start = time.perf_counter()
    s.records(adapter)
    sync()
    print(
        json.dumps(
            {
                "prompts": n,
                "mixed_quantized_s": round(mixed, 2),
                "two_dense_passes_s": round(time.perf_counter() - start, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
