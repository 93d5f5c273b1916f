"""Evaluate a saved adapter exactly as a trial's final report does (`qlora-sweep eval`)."""

from __future__ import annotations

import time
from pathlib import Path

from evaluation.generation import generate, with_outputs
from evaluation.generation import records as generation_records
from evaluation.loss import evaluate_loss
from trainables.batching import trial_eval_batches
from trainables.checkpoint import adapter_base
from trainables.config import TrialConfig
from trainables.data import prepare_data, sample_prompts
from trainables.judging import judge_outputs
from trainables.model import load_adapter, load_base_model, load_tokenizer


def evaluate_adapter(cfg: TrialConfig, adapter: str | Path) -> dict:
    """Eval loss and perplexity of base and adapter on the held-out split, generations, judge scores.

    The base is the one the adapter names (a hub id, or a built-in's portable name resolved through
    the local cache, offline) unless the config sets `model.path` itself.
    """
    cfg, tokenizer, data, model = _loaded(cfg, adapter)
    batches = trial_eval_batches(cfg.training, data.eval, tokenizer.pad_token_id)
    with model.disable_adapter():
        base = evaluate_loss(model, batches)
    tuned = evaluate_loss(model, batches)
    rows, prompts = sample_prompts(cfg, data)
    records = generation_records(rows, prompts, generate(model, tokenizer, prompts, cfg.generation))
    judged = judge_outputs(cfg, records)
    return {
        **tuned,
        "base_eval_loss": base["eval_loss"],
        "base_perplexity": base["perplexity"],
        **judged,
        "generations": records,
    }


def _loaded(cfg: TrialConfig, adapter: str | Path):  # noqa: ANN202 - (cfg, tokenizer, data, model)
    """The config with the base the adapter names, its tokenizer and data, and base + adapter loaded."""
    named = adapter_base(adapter)
    if named and "path" not in cfg.model.model_fields_set:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": named})})
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data, tokenizer, cfg.training.max_seq_len)
    return cfg, tokenizer, data, load_adapter(load_base_model(cfg.model, cfg.quantization), adapter)


def sample_generations(
    cfg: TrialConfig, adapter: str | Path, seconds: dict | None = None
) -> tuple[list[dict], list[dict]]:
    """A trial's generations for the fixed held-out prompts and the base model's for the same prompts,
    as a trial with a judge writes them (for a sweep without one: its best trial, once, after it ends).
    `seconds` gets the time spent loading and generating (the sweep's "driver:" line shows them)."""
    seconds = {} if seconds is None else seconds
    started = time.perf_counter()
    cfg, tokenizer, data, model = _loaded(cfg, adapter)
    seconds["load"] = time.perf_counter() - started
    rows, prompts = sample_prompts(cfg, data)
    records = generation_records(rows, prompts, generate(model, tokenizer, prompts, cfg.generation))
    with model.disable_adapter():
        base = with_outputs(records, generate(model, tokenizer, prompts, cfg.generation))
    seconds["generate"] = time.perf_counter() - started - seconds["load"]
    return records, base
