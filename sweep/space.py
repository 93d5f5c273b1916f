"""The one place where our YAML search space becomes Ray Tune domains (and back into a trial config).

Keys stay flat dotted paths ("lora.r"): Ray Tune nests only on '/', so dots survive as plain characters.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from trainables.config import TrialConfig, apply_params, validate

_BUILD = {
    "choice": lambda v: tune.choice(v),
    "uniform": lambda v: tune.uniform(*v),
    "loguniform": lambda v: tune.loguniform(*v),
    "randint": lambda v: tune.randint(v[0], v[1] + 1),  # YAML ranges are inclusive
    "lograndint": lambda v: tune.lograndint(v[0], v[1] + 1),
}


def tune_space(space: dict[str, dict[str, list]]) -> dict[str, Any]:
    """{"lora.r": {"choice": [8, 16]}} -> {"lora.r": tune.choice([8, 16])}."""
    return {path: _BUILD[kind](values) for path, dom in space.items() for kind, values in dom.items()}


def trial_config(base: dict, params: dict[str, Any]) -> TrialConfig:
    """The trial config for one sampled point: the base with each dotted path overridden."""
    return validate(TrialConfig, apply_params(base, params))


def describe(space: dict[str, dict[str, list]]) -> list[str]:
    """Human-readable lines, one per searched path."""
    return [f"{path}: {kind} {values}" for path, dom in space.items() for kind, values in dom.items()]
