"""How fast the samples' generation decodes, and what a faster decode step would give (issue 30).

On the H100 of the fifteenth session, SmolLM2's 8-bit base took 10.1 s for 4 rows x 64 tokens and 10.0 s
for 8: launch-bound. This times `evaluation.generation.generate` for a base at `rows` rows, as loaded for
the samples (quantized layers), and again with each quantized layer's weight dequantized once into a plain
matmul (what "weights dequantized for the generation" would buy, and whether its text is the same).

    python -m benchmarks.gen_probe --set model.path=/tmp/qlora-bench/model --set quantization.bits=4 [--rows 8 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import bitsandbytes as bnb
import torch
import torch.nn.functional as F

from evaluation.generation import generate
from trainables.config import load_trial_config
from trainables.evaluate import Samples
from trainables.int8_matmul import dequantize_int8


@contextlib.contextmanager
def dense(model):
    """Each bitsandbytes layer runs as F.linear of its weight, dequantized once (as its own forward does)."""
    swapped = []
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state)
        elif isinstance(m, bnb.nn.Linear8bitLt):
            w = dequantize_int8(
                m.weight.CB if m.weight.CB is not None else m.weight.data, m.weight.SCB, torch.bfloat16
            )
        else:
            continue
        swapped.append((m, m.forward))
        m.forward = lambda x, w=w, b=m.bias: F.linear(x, w.to(x.dtype), b)
    try:
        yield len(swapped)
    finally:
        for m, fwd in swapped:
            m.forward = fwd


def timed(s: Samples, rows: int) -> tuple[float, list[str]]:
    prompts = (s.prompts * rows)[:rows]
    start = time.perf_counter()
    out = generate(s.model, s.tokenizer, prompts, s.cfg.generation, batch_size=rows)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--rows", type=int, nargs="+", default=[8, 16])
    a = ap.parse_args()
    s = Samples(load_trial_config(None, a.sets))
    timed(s, 1)  # CUDA's and the kernels' first-use costs out of the rows below
    for rows in a.rows:
        quantized, q_out = timed(s, rows)
        with dense(s.model) as n:
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


if __name__ == "__main__":
    main()
