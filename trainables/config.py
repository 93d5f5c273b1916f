"""The trial config: everything one QLoRA trial needs, typed and validated before any work starts.

Every field carries its help text (as peft's LoraConfig does). Validation errors become one
`ConfigError` naming the dotted field path, the value and what is allowed; `--set key=value`
overrides are applied to the raw mapping first so they are validated exactly like the YAML.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from evaluation.config import GenerationConfig, JudgeConfig, Strict
from evaluation.errors import ConfigError

TARGET_PRESETS = ("attention", "attention-all", "all-linear", "all-linear+lm_head")
BUILTIN_MODELS = ("tiny", "smollm2-135m")


class ModelConfig(Strict):
    path: str = Field(
        "smollm2-135m",
        description="Hub id, local directory, or a built-in name: 'smollm2-135m' (default) or 'tiny' (for tests), "
        "or a built-in's portable name as adapters record it ('qlora-sweep:smollm2-135m-v1').",
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) for reproducibility."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype of the unquantized parts; auto = bfloat16 on GPU, float32 on CPU."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flex_attention", "flash_attention_2"] = Field(
        "auto",
        description="auto = flex_attention on a GPU, sdpa on the CPU (packed sequences never attend across examples).",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run code shipped with a hub model. Refused unless set: it executes untrusted code.",
    )


class QuantizationConfig(Strict):
    bits: Literal[4, 8, 16] = Field(4, description="Base weights: 4/8 = bitsandbytes QLoRA, 16 = plain LoRA.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantize the 4-bit quantization constants too.")
    int8_matmul: Literal["dequantize", "llm.int8"] = Field(
        "dequantize",
        description="8-bit layers: 'dequantize' = int8 weights dequantized to the compute dtype for a plain "
        "matmul (same memory, ~3x faster, activations never quantized); 'llm.int8' = bitsandbytes' "
        "int8 matmul with outlier decomposition.",
    )
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Dtype of the matmuls; auto = bfloat16 on GPU, float32 on CPU."
    )


class LoraConfig(Strict):
    r: int = Field(8, gt=0, le=4096, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the LoRA input. 0 by default: dropout keeps a dropped copy of every adapted "
        "input for backward (~40% more activation memory, ~6% slower on an H100); on the tiny-model "
        "quality check, 0 with packing off matched the seed recipe's dropout 0.05 (benchmarks/RESULTS.md).",
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description=f"A preset {TARGET_PRESETS} resolved against the model's own module names, or a list of names.",
    )

    @field_validator("target_modules")
    @classmethod
    def _known_preset(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, str) and v not in TARGET_PRESETS:
            raise ValueError(
                f"unknown preset; allowed: {', '.join(TARGET_PRESETS)} or a list of module names"
            )
        if isinstance(v, list) and not v:
            raise ValueError("empty list; name at least one module")
        return v


class Columns(Strict):
    product: str = Field("product", description="Column holding the product name.")
    category: str = Field("category", description="Column holding the category.")
    description: str = Field("description", description="Column holding the target description.")


class DataConfig(Strict):
    source: str = Field(
        "sample",
        description="'sample' (bundled), a local .jsonl/.json/.csv/.parquet file, or a hub dataset id.",
    )
    split: str = Field("train", description="Split to read from a hub dataset.")
    columns: Columns = Field(default_factory=Columns)
    template: str = Field(
        "alpaca",
        description="'alpaca' (as in the seed study) or a custom prompt with {product} and {category} placeholders.",
    )
    eval_rows: int = Field(100, ge=1, description="Held-out rows (whole products are held out).")
    seed: int = Field(42, description="Shuffles rows and chooses the held-out products.")
    max_rows: int | None = Field(None, gt=0, description="Use at most this many rows (after shuffling).")
    overlong: Literal["truncate", "drop"] = Field(
        "truncate",
        description="What to do with rows longer than training.max_seq_len (they are counted either way).",
    )

    @field_validator("template")
    @classmethod
    def _template_has_fields(cls, v: str) -> str:
        if v != "alpaca" and ("{product}" not in v or "{category}" not in v):
            raise ValueError("a custom template must contain {product} and {category}")
        return v


class TrainingConfig(Strict):
    lr: float = Field(
        8e-4,
        gt=0,
        lt=1,
        description="Peak learning rate. The seed's 2e-4 was for 16 unpacked examples per step; a packed "
        "16 x 512 step holds ~3x their tokens, so an epoch has ~3x fewer steps and each must move further. "
        "On SmolLM2 (4-bit, same tokens) 8e-4 beat the seed recipe's eval loss by 6-8% at 1 and 3 epochs "
        "and three seeds, where 6e-4 was +1.8 to +2.4% behind at 3 epochs (benchmarks/RESULTS.md, quality).",
    )
    epochs: float = Field(
        3, gt=0, description="Passes over the training rows (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps; overrides epochs.")
    batch_size: int = Field(
        16,
        gt=0,
        description="Micro-batch: rows per forward pass (packed rows when packing). 16 x 512 tokens keeps an "
        "H100 busy: at 8 rows the per-layer launch overhead of 4-bit + LoRA leaves the GPU idle a quarter "
        "of the time.",
    )
    grad_accum: int = Field(
        1, gt=0, description="Micro-batches per optimizer step (16 x 1 = the seed's 4 x 4 rows)."
    )
    max_seq_len: int = Field(512, ge=16, le=131072, description="Tokens per (packed) row.")
    packing: bool = Field(
        True, description="Pack several examples into one row; attention never crosses example boundaries."
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="auto = on when the memory estimate does not fit the GPU share (or, on the CPU, free RAM).",
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps with linear warm-up.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the LoRA weights.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    eval_interval: int = Field(
        50, gt=0, description="Optimizer steps between reports (eval loss, checkpoint); ASHA's rungs."
    )
    eval_batches: int | None = Field(
        None,
        gt=0,
        description="Cap on eval batches per report (None = all); packed, a batch holds at least 16 x 512 tokens.",
    )
    keep_checkpoints: int = Field(2, ge=1, description="Adapter checkpoints kept on disk per trial.")
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the decoder layers on a GPU (never on the CPU). auto = compile when the "
        "predicted time saved exceeds the compile time (trainables/compile_policy.py); the decision and "
        "its reason are in the trial's output and metrics. true / false force it.",
    )
    seed: int = Field(42, description="Seeds LoRA init and data order.")


class TrialConfig(Strict):
    """One trial. The sweep config embeds these sections as its base."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    output_dir: str | None = Field(None, description="Where `qlora-sweep train` writes checkpoints.")

    @model_validator(mode="after")
    def _eval_interval_fits(self) -> TrialConfig:
        if self.training.max_steps is not None and self.training.eval_interval > self.training.max_steps:
            self.training.eval_interval = self.training.max_steps
        return self


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-5` as a string; learning rates are written that way, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


Cfg = TypeVar("Cfg", bound=BaseModel)


def validate(cls: type[Cfg], data: Any) -> Cfg:
    """Validate a raw mapping; the first problem becomes a `ConfigError` naming its dotted field."""
    if not isinstance(data, dict):
        raise ConfigError("<config>", data, "a mapping of sections (model, lora, data, training, ...)")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in _field_loc(cls, first["loc"]))
        value = first.get("input")
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            parent = _model_at(cls, first["loc"][:-1])
            names = ", ".join(parent.model_fields) if parent else "see the config reference"
            raise ConfigError(loc, value, f"known keys here: {names}", "unknown key") from None
        msg = msg.replace("Input should be ", "").replace("Value error, ", "")
        raise ConfigError(loc or "<config>", value, msg) from None


def _field_loc(cls: type[BaseModel], loc: tuple) -> tuple:
    """The error's location without pydantic's union-member tags: `lora.target_modules.str` names
    no field a user can write, `lora.target_modules` does."""
    out: list = []
    model: type[BaseModel] | None = cls
    parts = iter(loc)
    for part in parts:
        out.append(part)
        field = model.model_fields.get(str(part)) if model is not None else None
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        members = [a for a in get_args(ann) if a is not type(None)]
        if get_origin(ann) in (Union, UnionType) and len(members) > 1:
            next(parts, None)  # the member tag ('str', 'list[str]', 'float', ...)
    return tuple(out)


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at a location path (for listing the keys allowed there)."""
    for part in loc:
        field = cls.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def apply_params(data: dict, params: dict[str, Any]) -> dict:
    """A copy of a raw config mapping with each dotted path (``lora.r``) set to its value."""
    data = copy.deepcopy(data)
    for key, value in params.items():
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(key, value, f"'{part}' holds a value, not a section")
            node = child
        node[parts[-1]] = value.item() if hasattr(value, "item") else value  # numpy scalars from samplers
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `--set key.sub=value` overrides (values parsed as YAML) to a copy of a raw config mapping."""
    params = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "key=value with a dotted key, e.g. lora.r=16")
        try:
            params[key.strip()] = parse_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(key.strip(), raw, "a YAML value (number, string, list, mapping)") from None
    return apply_params(data, params)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, turning a missing file or a syntax error into a `ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config", str(path), "a path to an existing YAML file")
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError("config", str(path), "valid UTF-8 YAML", str(err).splitlines()[0]) from None
    return data if data is not None else {}


def load_trial_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrialConfig:
    """The trial config from a YAML file (or the defaults) plus `--set` overrides."""
    data = read_yaml(path) if path else {}
    return validate(TrialConfig, apply_overrides(data, overrides or []))


def flatten(cfg: BaseModel | Mapping, prefix: str = "") -> dict[str, Any]:
    """`{"lora.r": 8, ...}`: the dotted view used for MLflow params and search-space paths."""
    data = cfg.model_dump() if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:  # an empty mapping stays a value (logged as "{}")
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out
