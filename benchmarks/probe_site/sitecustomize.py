"""A benchmark probe, not part of the tool. With QLORA_PROBE_BUDGET set, every Python process that has
this folder on PYTHONPATH sets torch's `activation_memory_budget` before any trial compiles: AOT
autograd's partitioner then keeps that share of a compiled graph's activations and recomputes the
cheapest rest in backward (on this box's CPU, a LoRA Llama layer with dropout 0.05 kept 24.2 MB of
activations at 1.0, 15.0 MB at 0.9: casts and dropout copies go first). `benchmarks/issue30_gpu.sh`'s
`budget` step measures a seed-study trial's peak memory and rate under it (issue 30: the seed study's
all-linear+lm_head trials need 35 GB at 16 x 512, over a third of an H100), before the run plan uses it.
"""

import os

if os.environ.get("QLORA_PROBE_BUDGET"):
    import torch._functorch.config as _functorch_config

    _functorch_config.activation_memory_budget = float(os.environ["QLORA_PROBE_BUDGET"])
