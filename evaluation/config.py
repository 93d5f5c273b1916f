"""Typed settings for generation and the LLM judge (embedded in the trial config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored. Defaults are
    validated too, so `alpha: float = 16` is 16.0 whether defaulted or read back from a saved config
    (a resumed sweep's MLflow params then equal the first run's)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class GenerationConfig(Strict):
    num_prompts: int = Field(8, ge=0, le=1000, description="Held-out prompts generated per trial (0 = none).")
    max_new_tokens: int = Field(96, ge=1, le=2048, description="Upper bound on generated tokens per prompt.")
    do_sample: bool = Field(False, description="Greedy decoding by default so that trials compare fairly.")
    temperature: float = Field(0.7, gt=0, le=5, description="Used only when do_sample is true.")
    top_p: float = Field(0.9, gt=0, le=1, description="Used only when do_sample is true.")
    repetition_penalty: float = Field(
        1.1, ge=1, le=3, description="Discourages the loops small models fall into."
    )
    seed: int = Field(0, description="Chooses the prompts and seeds sampling.")


class JudgeConfig(Strict):
    backend: Literal["none", "local", "openai"] = Field(
        "none",
        description="'local': a Hugging Face causal LM scores by expected score; 'openai': any OpenAI-compatible chat endpoint.",
    )
    model: str = Field(
        "smollm2-135m", description="Local: model path/hub id/built-in name. openai: the served model name."
    )
    base_url: str | None = Field(None, description="openai backend: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the key (never the key itself)."
    )
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once (openai backend).")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Per request.")
    retries: int = Field(2, ge=0, le=10, description="Retries per sample after the first try, with backoff.")
    backoff_s: float = Field(
        0.5,
        ge=0,
        le=60,
        description="Wait before the first retry; each later retry waits twice as long (openai).",
    )
    batch_size: int = Field(8, ge=1, le=256, description="Prompts per forward pass (local backend).")
    pairwise: Literal["none", "base", "reference"] = Field(
        "none",
        description="Also compare each output with the base model's or the reference (win rate, both orders).",
    )
    calibrate: bool = Field(True, description="Check the judge on a calibration set before trusting it.")
    min_accuracy: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Calibration pairwise accuracy below this marks the judge's scores untrustworthy.",
    )
    cache_dir: str | None = Field(
        None,
        description="Verdict cache, keyed by the judge's identity (backend, endpoint, model, prompt version; local: "
        "weights) and the texts judged; default: $QLORA_SWEEP_CACHE/judge. judge-check never reads it.",
    )
