"""Micro-batches: which rows go together, in which order, and how they become tensors.

Packed rows hold several examples back to back; `position_ids` restart at 0 for each example and
no attention mask is passed, which makes transformers build a block-diagonal causal mask (sdpa,
eager and flex alike), so attention never crosses an example boundary. The order of micro-batches
is a pure function of (seed, epoch), so a resumed trial sees exactly the batches it would have.
"""

from __future__ import annotations

import random

import datasets
import torch
from trl.data_utils import pack_dataset

from trainables.compile_policy import bucket_width
from trainables.run_plan import FAST_TOKENS


def pack(ds: datasets.Dataset, max_seq_len: int) -> datasets.Dataset:
    """Best-fit-decreasing packing (trl's), keeping `seq_lengths` to rebuild per-example positions."""
    return pack_dataset(ds.select_columns(["input_ids", "labels"]), max_seq_len, strategy="bfd")


def micro_batch_plan(n_rows: int, batch_size: int, seed: int, epochs: int) -> list[list[int]]:
    """Row indices of every micro-batch for `epochs` passes: a fresh seeded permutation each epoch."""
    plan: list[list[int]] = []
    for epoch in range(epochs):
        order = list(range(n_rows))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        plan += [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]
    return plan


def collate(rows: list[dict], pad_id: int, shape: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest row, or to `shape` = (rows, width) when given: one fixed shape for every
    micro-batch lets torch.compile keep one static graph (a new width or row count would recompile, and
    after two it compiles a slower dynamic-shape graph). Pad rows carry no labels, so no loss.
    Packed rows (with `seq_lengths`) get position_ids and no attention mask."""
    n_rows, width = shape or (len(rows), max(len(r["input_ids"]) for r in rows))
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    labels = torch.full((n_rows, width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
    if "seq_lengths" not in rows[0]:
        mask = torch.ones((n_rows, width), dtype=torch.long)  # pad rows attend among themselves: never a
        for i, r in enumerate(rows):  # fully masked row, whose softmax would be NaN in backward
            mask[i, len(r["input_ids"]) :] = 0
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
    positions = torch.arange(width).repeat(n_rows, 1)  # pad rows are one segment each
    for i, r in enumerate(rows):
        lengths = list(r["seq_lengths"]) + (
            [width - sum(r["seq_lengths"])] if width > sum(r["seq_lengths"]) else []
        )
        positions[i] = torch.cat([torch.arange(n) for n in lengths])  # the pad tail is its own segment
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def eval_batches(
    ds: datasets.Dataset,
    batch_size: int,
    pad_id: int,
    limit: int | None = None,
    shape: tuple[int, int] | None = None,
    bucket_max: int | None = None,
) -> list[dict]:
    """Fixed eval batches, the same for every trial: unpacked rows sorted by length (little padding),
    or packed rows padded to `shape`.
    `bucket_max` (unpacked, compiled): each batch padded to `batch_size` rows x its length bucket."""
    if shape is not None:
        packed = pack(ds, shape[1])
        batches = [
            collate([packed[i] for i in range(j, min(j + shape[0], len(packed)))], pad_id, shape)
            for j in range(0, len(packed), shape[0])
        ]
    else:
        order = sorted(range(len(ds)), key=lambda i: len(ds[i]["input_ids"]))
        groups = [[ds[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]
        batches = [
            collate(g, pad_id, bucket_shape(g, batch_size, bucket_max) if bucket_max else None)
            for g in groups
        ]
    return batches[:limit] if limit else batches


def bucket_shape(rows: list[dict], n_rows: int, max_len: int) -> tuple[int, int]:
    """(n_rows, the length bucket of the longest row): the few shapes a compiled unpacked trial sees."""
    return n_rows, bucket_width(max(len(r["input_ids"]) for r in rows), max_len)


def trial_eval_batches(training, ds: datasets.Dataset, pad_id: int, bucketed: bool = False) -> list[dict]:
    """The eval batches a trial scores with, per its `training` config (all of them: each worker takes
    its share, so the set does not depend on the worker count). `qlora-sweep eval` and the quality
    benchmark use these too, so every eval loss of an adapter is the same computation (padding to a
    length bucket when compiled adds pad positions only, which carry no loss). Packed rows go at least
    FAST_TOKENS (the default micro-batch's 16 x 512) to a batch: the seed study's 4 x 512 made 11 eager forwards of a 3B base an eval, 8
    evals a trial, where 3 of 16 x 512 do. No gradients and the head in chunks (evaluation/loss.py):
    ~1 GB of transient memory on the 3B shape, below what a training step of 2 x 512 keeps. A
    `training.eval_batches` cap counts these batches."""
    rows = max(training.batch_size, FAST_TOKENS // training.max_seq_len)
    shape = (rows, training.max_seq_len) if training.packing else None
    bucket_max = training.max_seq_len if bucketed and not training.packing else None
    return eval_batches(ds, training.batch_size * 2, pad_id, training.eval_batches, shape, bucket_max)


def response_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss in a batch (counted on the host: no device sync)."""
    return int((batch["labels"][:, 1:] != -100).sum())
