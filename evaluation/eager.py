"""Run a model whose layers may be compiled eagerly, with sdpa attention, for a few forward passes.

Evaluation and generation see shapes the training graph was not compiled for (a no-grad pass, every
generation length): compiling them costs seconds each (4-12 s for an eval graph on an H100, issue 30)
for work that takes well under a second eager. Flex attention outside torch.compile runs unfused (the
whole scores matrix, and a warning per call), so these passes use sdpa, which needs no block mask for
unpacked rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def eager_sdpa(model) -> Iterator[None]:
    attn = getattr(model.config, "_attn_implementation", None)
    if attn == "flex_attention":
        model.set_attn_implementation("sdpa")
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        if attn == "flex_attention":
            model.set_attn_implementation(attn)
