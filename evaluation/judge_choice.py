"""The judge a config asks for: the one place that knows both backends.

Kept apart from `judge.py` so that imports point one way: the backends import the shared types
in `judge.py`, and this module imports the backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evaluation.config import JudgeConfig
from evaluation.judge import CachedJudge, Judge
from evaluation.judge_http import OpenAIJudge
from evaluation.verdict_cache import VerdictCache, default_cache_dir


def build_judge(cfg: JudgeConfig, load_local: Callable[[str], tuple[Any, Any]] | None = None) -> Judge | None:
    """The judge `cfg` asks for, or None for backend 'none'.

    `load_local(cfg.model)` returns (model, tokenizer); it comes from the caller because resolving
    built-in model names lives in `trainables`, which `evaluation` must not import.
    """
    if cfg.backend == "none":
        return None
    judge: CachedJudge
    if cfg.backend == "openai":
        judge = OpenAIJudge(
            cfg.base_url,
            cfg.model,
            cfg.api_key_env,
            concurrency=cfg.concurrency,
            timeout_s=cfg.timeout_s,
            retries=cfg.retries,
            backoff_s=cfg.backoff_s,
        )
    else:
        if load_local is None:
            raise ValueError("judge.backend 'local' needs load_local(model_name) -> (model, tokenizer)")
        from evaluation.judge_local import LocalJudge  # torch is imported only when a local judge is used

        model, tokenizer = load_local(cfg.model)
        judge = LocalJudge(model, tokenizer, batch_size=cfg.batch_size)
    judge.cache = VerdictCache(cfg.cache_dir or default_cache_dir())  # after the settings are known good
    return judge
