"""Workaround for a bitsandbytes 0.50.2 bug that silently ruins 4-bit training on some CPUs.

Cause: on CPUs with AVX512-BF16, `Linear4bit.forward` in eval mode under `no_grad` repacks its
weight in place for a CPU inference kernel (`packing_format_for_cpu`) and never unpacks it when
training resumes; afterwards the layer's input gradient is wrong. Any eval pass before or between
training steps therefore breaks training (measured: eval loss 3.39 -> 3.14 in 20 steps instead of
-> 1.14). Turning the fast CPU path off per layer avoids the repack.

Remove this module when a fixed bitsandbytes is pinned; `tests/trainables/test_bnb_cpu_fix.py`
fails if the bug comes back with the workaround disabled... and passes once upstream is fixed,
at which point the test says so.
"""

from __future__ import annotations

import torch


def disable_cpu_weight_repacking(model: torch.nn.Module) -> int:
    """Stop every bitsandbytes 4-bit layer from repacking its weight in place; returns how many."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # bitsandbytes absent: nothing to fix
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count
