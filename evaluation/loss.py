"""Loss on response tokens only, computed the same way for training, evaluation and the base model.

The output head runs only on positions whose next token is a response token, in chunks under
activation checkpointing, so a 32k-vocabulary logits tensor for the whole batch never exists
(the "chunked cross-entropy" that keeps memory flat). Perplexity is exp(mean response-token loss).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK = 1024  # positions per head chunk: 1024 x 32k-vocab fp32 logits (+ softmax, grad) ~ 0.4 GB


def _head_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def _decoder_and_head(model):
    """The transformer body and the output head, seen through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def response_loss_sum(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token losses over response positions, and how many there are."""
    device = next(p for p in model.parameters()).device
    labels = batch["labels"]
    width = labels.shape[1]
    next_labels = labels[:, 1:]
    targets_mask = next_labels != -100
    n = int(targets_mask.sum())
    # Which positions carry loss is decided on the host (labels live there), so selecting them on the
    # device is an index_select of known size: no boolean indexing, hence no device->host sync per batch.
    rows, cols = targets_mask.nonzero(as_tuple=True)
    index = (rows * width + cols).to(device, non_blocking=True)
    targets = next_labels[targets_mask].to(device, non_blocking=True)
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "labels"}
    decoder, head = _decoder_and_head(model)
    with _autocast(decoder, device):
        hidden = decoder(**inputs, use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)
        total = hidden.new_zeros((), dtype=torch.float32)
        for i in range(0, hidden.shape[0], CHUNK):
            h, t = hidden[i : i + CHUNK], targets[i : i + CHUNK]
            if torch.is_grad_enabled():
                total = total + checkpoint(_head_loss, head, h, t, use_reentrant=False)
            else:
                total = total + _head_loss(head, h, t)
    return total, n


def _autocast(decoder, device: torch.device):
    """bf16 autocast on a GPU whose model computes in bf16, so the fp32 LoRA weights compute in bf16.

    Without it peft casts every adapted layer's input to float32 (a full-width copy per adapter,
    kept for backward) before the rank-r matmuls: ~40% more activation memory and traffic. Under
    autocast peft skips that cast for quantized layers. CPU (float32) runs are unchanged.
    """
    dtype = decoder.get_input_embeddings().weight.dtype
    return torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype == torch.bfloat16)


def eval_loss_sums(model, batches: list[dict], as_trained: bool = False) -> tuple[float, int]:
    """(loss sum, token count) over `batches` in eval mode, without gradients; callers may sum these
    across workers. `as_trained`: in the mode and gradient setting the model trains in instead, so a
    compiled model's training graph runs the forward passes (no graph of their own, none kept after
    each loss); only for a model without dropout (`without_dropout`), where the two modes compute the
    same function."""
    was_training = model.training
    model.train(as_trained)
    total, count = 0.0, 0
    with torch.set_grad_enabled(as_trained):
        for batch in batches:
            loss, n = response_loss_sum(model, batch)
            total += float(loss.detach())
            count += n
            # With gradients on, the loss holds its graph: the activations saved for a backward that never
            # comes. Freed now, not after the next batch's forward (two batches' activations at once).
            del loss
    model.train(was_training)
    return total, count


def without_dropout(model) -> bool:
    """No dropout anywhere: no dropout module with p > 0 and no dropout rate in the model's config (some
    attention code applies the config's rate itself, in training mode only)."""
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return False
    config = getattr(model, "config", None)
    return config is None or not _dropout_rate(config.to_dict())


def _dropout_rate(settings: dict) -> bool:
    """Whether a config (nested ones, e.g. a multimodal model's text_config, included) sets a dropout."""
    for key, value in settings.items():
        if isinstance(value, dict) and _dropout_rate(value):
            return True
        rate = isinstance(key, str) and ("dropout" in key or "pdrop" in key)
        if rate and isinstance(value, int | float) and value > 0:
            return True
    return False


def loss_metrics(total: float, count: int) -> dict[str, float]:
    """eval_loss (mean over response tokens) and perplexity = exp(eval_loss)."""
    mean = total / max(count, 1)
    return {"eval_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "eval_tokens": count}


def evaluate_loss(model, batches: list[dict]) -> dict[str, float]:
    return loss_metrics(*eval_loss_sums(model, batches))
