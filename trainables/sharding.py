"""FSDP for trials bigger than one GPU: shard the frozen (4-bit) base and the LoRA weights across workers.

FSDP2 (`torch.distributed.fsdp.fully_shard`), not FSDP1: FSDP2 shards each parameter on its own as a
DTensor split on dim 0, so a bitsandbytes `Params4bit` stays a `[n, 1]` tensor whose rows are split
across workers (bitsandbytes overrides `torch.chunk` for it and restores the quant state on the
gathered weight in `fix_4bit_weight_quant_state_from_module`), frozen and trainable weights mix
freely, and the decoder and head may be called on their own (our chunked loss does). FSDP1 would
flatten each unit into one flat parameter of a single dtype and needs `use_orig_params` for the mix.

The 4-bit data is stored in the compute dtype (`bnb_4bit_quant_storage`, see
`trainables.model.quantization_config`), the layout bitsandbytes documents for FSDP-QLoRA and the one
FSDP1 requires; FSDP2 in torch 2.13 also sharded uint8 storage correctly when we tried it on the CPU.

Units: each decoder layer, the head (grouped with the input embedding when the two share a
weight), and the rest of the decoder (embeddings, final norm). The loss calls the decoder body and
the head separately (evaluation/loss.py), so those two are roots of their own FSDP trees rather
than children of one root that is never called. Gradients are summed, not averaged, across
workers, because the loss is already divided by the global token count (trial.py).
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from evaluation.errors import ConfigError

STRATEGIES = ("ddp", "fsdp")


def check_shardable(bits: int) -> None:
    """8-bit bases cannot be sharded: FSDP hands a layer its gathered weight as a plain tensor, and
    bitsandbytes' 8-bit layer needs the scales kept on its `Int8Params` (AttributeError: no `CB`)."""
    if bits == 8:
        raise ConfigError(
            "quantization.bits",
            bits,
            "4 or 16 with resources.strategy fsdp",
            "bitsandbytes 8-bit weights lose their scales when FSDP gathers them",
        )


def shard_model(model: torch.nn.Module) -> int:
    """Apply FSDP2 to a (peft-wrapped) causal LM in place; returns how many FSDP units were made."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    embed = decoder.get_input_embeddings()
    units = list(getattr(decoder, "layers", []))
    for layer in units:
        fully_shard(layer)
    tied = head is not None and _weight(head) is _weight(embed)
    if head is not None:
        fully_shard([embed, head] if tied else head)
        units.append(head)
    fully_shard(decoder)
    units.append(decoder)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # sum: the loss is divided by the global token count
            module.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
    return len(units)


def _weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The module's base weight (peft wraps a LoRA-adapted head: its weight sits on `base_layer`)."""
    inner = getattr(module, "base_layer", module)
    return getattr(inner, "weight", None)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (all-gathered from every worker: every rank must call this, in the same order)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def shard_like(like: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor every worker holds) laid out like `like`: this worker's shard of it."""
    value = value.to(like.device, like.dtype)
    if not isinstance(like, DTensor):
        return value
    # src_data_rank=None: every worker already has the whole tensor, so each just keeps its chunk.
    return distribute_tensor(value, like.device_mesh, like.placements, src_data_rank=None)


def local_fraction(params: list[torch.Tensor]) -> float:
    """Elements of `params` held by this worker over their full size (1.0 when not sharded)."""
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    return local / max(1, sum(p.numel() for p in params))
