"""Evaluate a saved adapter exactly as a trial's final report does (`qlora-sweep eval`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from evaluation.generation import generate, with_outputs
from evaluation.generation import records as generation_records
from evaluation.loss import evaluate_loss
from trainables.batching import trial_eval_batches
from trainables.checkpoint import adapter_base
from trainables.config import TrialConfig
from trainables.data import prepare_data, sample_prompts
from trainables.dense import dense_weights
from trainables.judging import judge_outputs
from trainables.model import load_adapter, load_base_model, load_tokenizer
from trainables.node_cache import base_generations_path, node_cached


def evaluate_adapter(cfg: TrialConfig, adapter: str | Path) -> dict:
    """Eval loss and perplexity of base and adapter on the held-out split, generations, judge scores.

    The base is the one the adapter names (a hub id, or a built-in's portable name resolved through
    the local cache, offline) unless the config sets `model.path` itself.
    """
    cfg = resolved(cfg, adapter)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data, tokenizer, cfg.training.max_seq_len)
    model = load_adapter(load_base_model(cfg.model, cfg.quantization), adapter)
    batches = trial_eval_batches(cfg.training, data.eval, tokenizer.pad_token_id)
    with model.disable_adapter():
        base = evaluate_loss(model, batches)
    tuned = evaluate_loss(model, batches)
    rows, prompts = sample_prompts(cfg, data)
    with dense_weights(model):
        records = generation_records(rows, prompts, generate(model, tokenizer, prompts, cfg.generation))
    judged = judge_outputs(cfg, records)
    return {
        **tuned,
        "base_eval_loss": base["eval_loss"],
        "base_perplexity": base["perplexity"],
        **judged,
        "generations": records,
    }


class Samples:
    """A base model held for sample generations: its own outputs for the fixed held-out prompts, once,
    then any adapter's over it. On a cluster a sweep loads it while its last trials still run
    (`sweep/samples.py`), so what is left after the sweep is the best adapter's generation alone."""

    def __init__(self, cfg: TrialConfig):
        self.cfg, self.key = cfg, samples_key(cfg)
        self.tokenizer = load_tokenizer(cfg.model)
        data = prepare_data(cfg.data, self.tokenizer, cfg.training.max_seq_len)
        self.rows, self.prompts = sample_prompts(cfg, data)
        self.model = load_base_model(cfg.model, cfg.quantization)
        self._base: list[str] | None = None
        self.base_shared = False  # whether the base's outputs came from the node's cache
        self.adapted = False

    def base_outputs(self) -> list[str]:
        """The bare base model's outputs (what `disable_adapter()` would give), generated once per node:
        a judged trial or an earlier sweep's sampler may have made them (trainables/node_cache.py)."""
        if self._base is None:
            path = base_generations_path(self.cfg, self.model, self.prompts)
            self._base, self.base_shared = node_cached(path, lambda: self._generate(base=True))
        return self._base

    def _generate(self, base: bool = False) -> list[str]:
        """Outputs with the weights dequantized once (trainables/dense.py), within the memory this
        process may use (a sampler actor is held to its GPU share). Base and adapter in passes of their
        own: peft's mixed-adapter batch for both took 17 s on an H100 where the base alone took 4.7 s
        (issue 30)."""
        off = self.model.disable_adapter() if base and self.adapted else contextlib.nullcontext()
        with off, dense_weights(self.model):  # adapters off first: dense_weights merges enabled ones
            return generate(self.model, self.tokenizer, self.prompts, self.cfg.generation)

    def records(self, adapter: str | Path) -> tuple[list[dict], list[dict]]:
        """The adapter's generation records and the base's for the same prompts. The adapter is
        loaded onto the held base (which it then wraps): one adapter per `Samples`."""
        self.model, self.adapted = load_adapter(self.model, adapter), True
        base = self.base_outputs()
        records = generation_records(self.rows, self.prompts, self._generate())
        return records, with_outputs(records, base)


def samples_key(cfg: TrialConfig) -> str:
    """What the held base and its outputs depend on: a best trial with another base (say other bits)
    needs its own."""
    parts = (cfg.model, cfg.quantization, cfg.data, cfg.generation)
    return "|".join(p.model_dump_json() for p in parts) + f"|{cfg.training.max_seq_len}"


def resolved(cfg: TrialConfig, adapter: str | Path) -> TrialConfig:
    """The config with the base the adapter names, unless the config sets `model.path` itself."""
    named = adapter_base(adapter)
    if named and "path" not in cfg.model.model_fields_set:
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": named})})
    return cfg


def sample_generations(cfg: TrialConfig, adapter: str | Path) -> tuple[list[dict], list[dict]]:
    """A trial's generations for the fixed held-out prompts and the base model's for the same prompts,
    as a trial with a judge writes them (for a sweep without one: its best trial, once, after it ends)."""
    return Samples(resolved(cfg, adapter)).records(adapter)
