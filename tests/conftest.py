"""Fixtures shared by every test package.

Built models go to one cache per checkout (pytest's own cache dir, .pytest_cache/d/qlora-sweep):
a CI run builds the tiny model once, and a developer's reruns reuse it and the converted SmolLM2.
Set QLORA_SWEEP_CACHE to choose another place (CI can persist it). The variable is set at
configure time, before any test starts a Ray worker or subprocess, so they all share the cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("QLORA_SWEEP_CACHE"):
        cache = getattr(config, "cache", None)  # None when run with -p no:cacheprovider
        where = cache.mkdir("qlora-sweep") if cache else tempfile.mkdtemp(prefix="qlora-sweep-cache-")
        os.environ["QLORA_SWEEP_CACHE"] = str(where)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The built-in "tiny" Llama (2 layers, hidden 64, byte-level BPE 1024), built once per cache."""
    from trainables.builtin_models import tiny_model_dir as build

    return build()
