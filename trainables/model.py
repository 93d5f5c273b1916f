"""Load the base model (4/8/16 bits), resolve LoRA targets against its real module names, attach LoRA.

Also counts trainable parameters from a model config alone (meta device, no weights), which is how
`qlora-sweep plan` reproduces the seed study's table without downloading 3B parameters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from evaluation.errors import ConfigError
from trainables.bnb_cpu_fix import disable_cpu_weight_repacking
from trainables.builtin_models import resolve_model_path
from trainables.config import LoraConfig, ModelConfig, QuantizationConfig
from trainables.int8_matmul import use_dequantized_int8

# Leaf names of query/value projections across architectures (Llama/Mistral/Qwen: q_proj, v_proj;
# BERT-style: query, value; T5: q, v). Fused qkv projections are adapted whole.
_QUERY_VALUE = {"q_proj", "v_proj", "query", "value", "q", "v", "wq", "wv"}
_FUSED_QKV = {"qkv_proj", "c_attn", "query_key_value", "Wqkv", "W_pack"}
_ATTENTION_PARENT = re.compile(r"(attn|attention)", re.IGNORECASE)


def device_for_trial() -> torch.device:
    """The device this process should train on (Ray sets CUDA_VISIBLE_DEVICES per trial)."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' means bfloat16 on a GPU and float32 on the CPU (CPU bf16 matmuls lose accuracy)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def check_model_path(cfg: ModelConfig) -> str:
    """The concrete path or hub id, failing early on a local-looking path that does not exist."""
    path = resolve_model_path(cfg.path)
    looks_local = path.startswith((".", "/", "~")) or Path(path).suffix in {".json", ".gguf"}
    if looks_local and not Path(path).expanduser().exists():
        raise ConfigError(
            "model.path", cfg.path, "an existing local directory, a hub id, 'tiny' or 'smollm2-135m'"
        )
    return str(Path(path).expanduser()) if looks_local else path


def _refuse_remote_code(cfg: ModelConfig, path: str) -> None:
    """A model whose config needs custom code is refused unless the user opted in."""
    if cfg.trust_remote_code:
        return
    config_file = Path(path) / "config.json"
    if config_file.is_file() and '"auto_map"' in config_file.read_text(encoding="utf-8"):
        raise ConfigError(
            "model.trust_remote_code",
            False,
            "true to run the custom code this model ships",
            hint=f"{path} needs it",
        )


def _not_a_model(cfg: ModelConfig, err: Exception, what: str) -> Exception:
    """The error to raise for a failed load: transformers' 'not found' (OSError without errno: a missing
    file, an unknown or unreachable hub id) and 'not a model' (ValueError) are the user's path, so they
    become a ConfigError naming the field; a real I/O error (disk full, permissions) stays as it is."""
    if isinstance(err, OSError) and err.errno is not None:
        return err
    text = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)[:200]
    if isinstance(err, ValueError) and "trust_remote_code" in str(err):  # a hub model with custom code
        allowed = "true to run the custom code this model ships"
        return ConfigError("model.trust_remote_code", cfg.trust_remote_code, allowed, text)
    return ConfigError("model.path", cfg.path, f"a model directory or hub id with {what}", text)


def load_config(cfg: ModelConfig):
    """The model's transformers config (from a hub id, a directory, or a directory with only config.json)."""
    path = check_model_path(cfg)
    _refuse_remote_code(cfg, path)
    try:
        return AutoConfig.from_pretrained(
            path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _not_a_model(cfg, err, "a config.json") from None


def load_tokenizer(cfg: ModelConfig):
    path = check_model_path(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(
            path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _not_a_model(cfg, err, "a tokenizer") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def quantization_config(
    q: QuantizationConfig, device: torch.device, shardable: bool = False
) -> BitsAndBytesConfig | None:
    """bitsandbytes settings for `q`. `shardable` (FSDP) stores the packed 4-bit data as a tensor of the
    compute dtype instead of uint8, so FSDP can shard and gather it like the LoRA weights beside it."""
    if q.bits == 16:
        return None
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = resolve_dtype(q.compute_dtype, device)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute if shardable else torch.uint8,
    )


def resolve_attn(cfg: ModelConfig, device: torch.device, compiled: bool = True) -> str:
    """'auto': flex attention for compiled layers on a GPU (block-sparse over packed examples, where
    sdpa falls back to its math kernel); sdpa otherwise, since flex without torch.compile runs an
    unfused path that materialises the whole scores matrix."""
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    return "flex_attention" if device.type == "cuda" and compiled else "sdpa"


def load_base_model(
    cfg: ModelConfig,
    q: QuantizationConfig,
    device: torch.device | None = None,
    shardable: bool = False,
    attn_implementation: str | None = None,
):
    """The frozen base model on `device`, quantized per `q`, with the bitsandbytes CPU fix applied
    (`shardable`: laid out for FSDP, see `quantization_config`; `attn_implementation`: default
    `resolve_attn` for compiled layers)."""
    device = device or device_for_trial()
    path = check_model_path(cfg)
    load_config(cfg)  # a missing or broken config, or unasked-for remote code, fails here as a ConfigError
    attn = attn_implementation or resolve_attn(cfg, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            revision=cfg.revision,
            dtype=resolve_dtype(cfg.dtype, device),
            quantization_config=quantization_config(q, device, shardable),
            device_map={"": device},
            attn_implementation=attn,
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=True,
        )
    except OSError as err:  # no weights, or only pickled (.bin) ones: safetensors are required
        raise _not_a_model(cfg, err, "safetensors weights (pickled .bin weights are refused)") from None
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    disable_cpu_weight_repacking(model)
    if q.bits == 8 and q.int8_matmul == "dequantize":
        use_dequantized_int8(model)
    return model


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Full names of every linear layer (plain, 4-bit or 8-bit) that LoRA could adapt."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in {
            "Linear4bit",
            "Linear8bitLt",
            "Conv1D",
        }:
            names.append(name)
    return names


def resolve_target_modules(model: torch.nn.Module, spec: str | list[str]) -> list[str] | str:
    """Turn a preset or a list into what peft accepts, checked against the model's own names."""
    full = linear_module_names(model)
    leaves = sorted({n.rsplit(".", 1)[-1] for n in full})
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out_name = (
        next((n for n, m in model.named_modules() if m is output), "lm_head") if output is not None else None
    )
    if isinstance(spec, list):
        unknown = [m for m in spec if m not in leaves and m not in full]
        if unknown:
            raise ConfigError(
                "lora.target_modules", unknown, f"linear modules of this model: {', '.join(leaves)}"
            )
        return spec
    attention = [n for n in full if _ATTENTION_PARENT.search(n.rsplit(".", 1)[0] if "." in n else "")]
    attn_leaves = sorted({n.rsplit(".", 1)[-1] for n in attention})
    if spec == "attention":
        chosen = [leaf for leaf in attn_leaves if leaf in _QUERY_VALUE] or [
            leaf for leaf in attn_leaves if leaf in _FUSED_QKV
        ]
        if not chosen:
            raise ConfigError(
                "lora.target_modules",
                spec,
                f"an explicit list from: {', '.join(leaves)}",
                "no query/value projections found",
            )
        return chosen
    if spec == "attention-all":
        return attn_leaves
    if spec == "all-linear":
        return "all-linear"  # peft's own resolution (every linear layer except the output head)
    body = sorted({n.rsplit(".", 1)[-1] for n in full if n != out_name})
    return body + ([out_name] if out_name else [])  # all-linear+lm_head


def attach_lora(model, lora: LoraConfig, seed: int = 0, gradient_checkpointing: bool = False):
    """Wrap the frozen base with fresh LoRA adapters (seeded, so trials with equal seeds start equal)."""
    targets = resolve_target_modules(model, lora.target_modules)
    torch.manual_seed(seed)
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return get_peft_model(model, peft_cfg)


def compile_seconds() -> dict[str, float]:
    """Dynamo's own account of this process's compile seconds so far, by stage (tracing, AOT autograd,
    Inductor, ...): a trial's compile is the difference across its first step (a reused worker has
    compiled before). What the first step's seconds are made of, where compile cost is decided."""
    from torch._dynamo.utils import compilation_time_metrics

    return {k: sum(v) for k, v in compilation_time_metrics.items()}


# Dynamo's timers worth reading (they nest: total holds tracing and AOT autograd, which holds Inductor,
# which holds codegen, the kernels' builds and loads), under short names.
COMPILE_STAGES = (
    ("total", "_compile.compile_inner"),
    ("trace", "bytecode_tracing"),
    ("aot_autograd", "create_aot_dispatcher_function"),
    ("inductor", "compile_fx_inner"),
    ("codegen", "GraphLowering.codegen"),
    ("kernel_build", "compile_file"),
    ("kernel_load", "PyCodeCache.load_by_key_path"),
    ("guards", "build_guards"),
)


def compile_stages(before: dict[str, float]) -> str:
    """The compile's seconds since `before` (from `compile_seconds`) by stage, e.g. "total 9.1s, trace
    2.0s, ..."; "none" when every graph was reused."""
    now = compile_seconds()
    spent = [(name, now.get(key, 0.0) - before.get(key, 0.0)) for name, key in COMPILE_STAGES]
    return ", ".join(f"{name} {v:.1f}s" for name, v in spent if v >= 0.05) or "none"


def compile_decoder_layers(model, backend: str = "inductor") -> int:
    """torch.compile each decoder layer (regional compilation); returns how many were compiled.

    The loss calls the decoder body directly (evaluation/loss.py), so compiling the outer wrapper
    would leave every trained op eager. The layers share one code object, so they share compiled
    graphs, and compile time is that of one layer rather than of the whole model. Static shapes:
    training and eval batches have one fixed shape (trainables/batching.py), and a dynamic-shape
    graph (what torch.compile falls back to after seeing two shapes) costs speed on every step.
    Generation runs these layers eagerly (evaluation/generation.py). `backend`: tests use "aot_eager".
    """
    # Compiled artifacts persist in our cache dir (set by trainables/__init__.py, before torch._dynamo loads).
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        model.compile(backend=backend)
        return 0
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 2 * len(layers))
    # The first layer's input (the frozen embedding's output) needs no gradient, the others' do, and
    # dynamo guards on that: two graphs, each compiled in full, for one code. Asking for the input's
    # gradient gives every layer the same graph, compiled once (for one layer's input gradient more per
    # step: ~1/(3 x layers) of the backward).
    if hasattr(model, "enable_input_require_grads") and not getattr(model, "_require_grads_hooks", None):
        model.enable_input_require_grads()
    for layer in layers:
        layer.compile(dynamic=False, backend=backend)
    return len(layers)


def load_adapter(base, adapter_dir: str | Path, trainable: bool = False) -> PeftModel:
    """Load a saved adapter onto its base: safetensors only, never pickle."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ConfigError(
            "adapter", str(adapter_dir), "a directory with adapter_model.safetensors (pickle is refused)"
        )
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable, use_safetensors=True)


def count_trainable_params(model_cfg: ModelConfig, lora: LoraConfig) -> int:
    """LoRA parameters for a model, from its config alone: built on the meta device, no weights read."""
    return count_trainable_params_for(load_config(model_cfg), lora)


def count_trainable_params_for(config, lora: LoraConfig) -> int:
    """As `count_trainable_params`, for an already loaded transformers config. A LoRA module holds
    r x (inputs + outputs) weights, linear in r: the count at rank 1, built once per model and targets
    in this process, times r (a sweep's plan counts every combination; peft's meta model took
    0.4-0.7 s each)."""
    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    key = (config.to_json_string(), json.dumps(targets))
    if key not in _RANK_ONE:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        peft_model = attach_lora(model, LoraConfig(r=1, target_modules=targets))
        _RANK_ONE[key] = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return lora.r * _RANK_ONE[key]


_RANK_ONE: dict[tuple[str, str], int] = {}  # (config JSON, targets) -> LoRA parameters at rank 1


def weights_identity(cfg: ModelConfig) -> list:
    """What a cached result about a model's weights is keyed by, besides its path and revision: the
    name, size and modification time of each weight file of a local directory (a directory saved again
    is another model); a hub id's revision names its weights itself."""
    path = Path(resolve_model_path(cfg.path)).expanduser()
    if not path.is_dir():
        return []
    files = sorted(f for f in path.iterdir() if f.suffix in {".safetensors", ".bin", ".gguf"})
    return [[f.name, f.stat().st_size, int(f.stat().st_mtime)] for f in files]
