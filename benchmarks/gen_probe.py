"""How fast the samples' generation decodes, and what a faster decode step would give (issue 30).

On the H100 of the fifteenth session, SmolLM2's 8-bit base took 10.1 s for 4 rows x 64 tokens and 10.0 s
for 8: launch-bound. This times `evaluation.generation.generate` for a base at `rows` rows, as loaded for
the samples (quantized layers), and again with each quantized layer's weight dequantized once into a plain
matmul (trainables/dense.py, what the samples now use; and whether its text is the same).

    python -m benchmarks.gen_probe --set model.path=/tmp/qlora-bench/model --set quantization.bits=4 [--rows 8 16]
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


if __name__ == "__main__":
    main()
