"""What may be logged to MLflow, and in which form: dotted params, masked secrets, numeric metrics.

Secrets (API keys, HF_TOKEN) come from the environment and must never reach MLflow params, tags or
artifacts. Environment variables are never logged; a value is masked when its key looks secret
(key/token/secret/password; a `*_env` key naming a variable is fine: a name is not a secret), when
it starts like a well-known credential (sk-, hf_, ghp_, Bearer ...) or when it contains the value
of any secret-named environment variable.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.config import flatten as flatten_dict  # one flattening for MLflow params and search paths

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
MAX_TAG_LEN = 8000
MASK = "***"

# Words of a key (split on _ - . and case) that make its value a secret. Whole words: `max_new_tokens`
# and `tokenizer` are not secrets, `api_key`, `hf_token`, `HF_TOKEN`, `apikey` are.
_SECRET_WORDS = {"key", "token", "secret", "password", "passwd", "apikey", "credential", "credentials"}
_SECRET_VALUE = re.compile(r"^(sk-|hf_|ghp_|gho_|github_pat_|xox[abp]-|AKIA|Bearer\s)\S{8,}")
# Ray's own bookkeeping in every result: not metrics of the trial.
_RAY_KEYS = frozenset(
    "pid timestamp date hostname node_ip trial_id experiment_tag should_checkpoint checkpoint_dir_name config"
    " time_this_iter_s time_since_restore iterations_since_restore timesteps_since_restore".split()
)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe` of the project checkout when there is one, else the installed package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return importlib.metadata.version("qlora-sweep")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def looks_secret(key: str) -> bool:
    """Whether a key (its last dotted part) names a secret: one of its words is key/token/secret/..."""
    words = re.split(r"[^a-z0-9]+", key.rsplit(".", 1)[-1].lower())
    return any(w in _SECRET_WORDS or w.endswith(("apikey", "secret", "password")) for w in words)


def secret_env_values() -> set[str]:
    """Values of environment variables whose names look secret: never allowed into MLflow."""
    return {v for k, v in os.environ.items() if looks_secret(k) and len(v) >= 8}


def safe_value(key: str, value: Any, secrets: set[str] | None = None) -> str:
    """The string MLflow may store for `key`: masked when it looks secret, truncated to the limit."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    secrets = secret_env_values() if secrets is None else secrets
    leaf = key.rsplit(".", 1)[-1]
    names_env_var = leaf.endswith("_env") and re.fullmatch(r"[A-Z_][A-Z0-9_]*", text) is not None
    if looks_secret(leaf) and value not in (None, "", False) and not names_env_var:
        return MASK
    if _SECRET_VALUE.search(text.strip()) or any(s in text for s in secrets):
        return MASK
    return text[:MAX_PARAM_LEN]


def safe_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The flattened, masked, truncated params of a (nested or dotted) config."""
    secrets = secret_env_values()
    return {k[:250]: safe_value(k, v, secrets) for k, v in flatten_dict(config).items()}


def sanitize(config: Any) -> Any:
    """A copy of a nested config with secret-looking values masked (for YAML artifacts)."""
    secrets = secret_env_values()

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, Mapping):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str | int | float | bool) or node is None:
            return MASK if safe_value(key, node, secrets) == MASK else node
        return str(node)

    return walk(config, "")


# The data accounting a trial reports (`data_stats`, from `PreparedData.stats` in trainables/data.py),
# logged as trial params. The stats' train_rows/eval_rows become rows_train/rows_eval: `data.eval_rows`
# is already the config field (the rows asked for), and params cannot be logged twice.
DATA_STATS_PARAMS = {
    "rows_read": "data.rows_read",
    "train_rows": "data.rows_train",
    "eval_rows": "data.rows_eval",
    "rows_dropped_blank": "data.rows_dropped_blank",
    "blank_product": "data.blank_product",
    "blank_category": "data.blank_category",
    "blank_description": "data.blank_description",
    "rows_dropped_duplicate": "data.rows_dropped_duplicate",
    "overlong_rows": "data.rows_overlong",
    "rows_dropped_overlong": "data.rows_dropped_overlong",
    "rows_beyond_max_rows": "data.rows_beyond_max_rows",
}


def data_stats_params(stats: Mapping[str, Any]) -> dict[str, str]:
    """The trial params of a trial's data accounting (counts only: the source and hash are params/tags)."""
    return {DATA_STATS_PARAMS[k]: str(v) for k, v in stats.items() if k in DATA_STATS_PARAMS}


def data_stats_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The data accounting back from a run's params (strings or parsed numbers); {} if it has none."""
    stats = {k: int(params[p]) for k, p in DATA_STATS_PARAMS.items() if str(params.get(p, "")).isdigit()}
    if stats and params.get("data.overlong") is not None:
        stats["overlong_policy"] = str(params["data.overlong"])
    return stats


# Where a trial's base model came from. For a built-in base the adapter names it portably
# ("qlora-sweep:smollm2-135m-v1") and base_model.json holds the exact source; the machine-local
# directory the trial loaded is only ever a tag (base_model_path), never inside the adapter.
BASE_MODEL_TAGS = tuple(f"base_model_{k}" for k in ("name", "source", "sha256", "build", "path"))


def base_model_tags(ckpt: Path) -> dict[str, str]:
    """The base-model tags of a trial checkpoint (see BASE_MODEL_TAGS); {} when it records none."""
    from trainables.checkpoint import BASE_INFO, STATE

    tags = {}
    info_file, state_file = ckpt / "adapter" / BASE_INFO, ckpt / STATE
    if info_file.is_file():
        facts = json.loads(info_file.read_text(encoding="utf-8"))
        build = facts.get("build", {})
        tags["base_model_name"] = facts.get("base_model")
        tags["base_model_source"] = build.get("source") or f"built by qlora-sweep ({facts.get('fetch')})"
        tags["base_model_sha256"] = build.get("gguf_sha256")
        tags["base_model_build"] = json.dumps(build, sort_keys=True)
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    local = state.get("base_model_path")
    if local and os.path.isabs(local):  # a hub id is no machine-local path
        tags["base_model_path"] = local
    return {k: str(v)[:MAX_TAG_LEN] for k, v in tags.items() if v}


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a Tune result (bools as 0/1), without Ray's bookkeeping."""
    out = {}
    for key, value in result.items():
        if key in _RAY_KEYS or isinstance(value, Mapping | str | list | tuple) or value is None:
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "unknown error")[:MAX_TAG_LEN]
