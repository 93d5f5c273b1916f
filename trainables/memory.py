"""Predict a trial's peak GPU memory from the model config alone (meta device, no weights).

Used by the run plan (trainables/run_plan.py), which `qlora-sweep plan`, the sweep's GPU fractions and
each trial share. The terms are the usual ones: frozen weights at their
storage width, LoRA weights with fp32 master copies, gradients and two Adam moments, the
activations saved for backward (per token and layer), the chunked output-head logits, and the CUDA
context. The activation constant is calibrated against measured peaks (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass

import torch
from transformers import AutoModelForCausalLM

from evaluation.loss import CHUNK
from trainables.config import TrialConfig

GIB = 2**30
CUDA_CONTEXT_GB = 0.6  # not seen by torch.cuda.max_memory_allocated, but taken from the GPU all the same
# Saved activations per token per decoder layer, in elements of the compute dtype (bf16), fitted to
# peaks measured on an H100 with the defaults (flex attention, compiled layers, bf16 autocast; see
# benchmarks/RESULTS.md): the body without LoRA on the MLP ~ (A_H * hidden + A_I * intermediate);
# adapting the MLP keeps its inputs (hidden + intermediate) for the adapters' weight gradients;
# LoRA dropout keeps a dropped copy of each adapted input; bitsandbytes int8 layers keep their inputs.
A_H, A_I = 6.0, 2.23
# Eager layers (no fusion; sdpa instead of flex attention) keep about twice the activations of compiled
# ones: 46 GB against 23 GB at the same shape on an H100 (issue 30).
EAGER_ACTS = 2.2
DROPOUT_COPY = 0.95  # x the summed input widths of the adapted layers
INT8_KEEP = 1.85  # x the summed input widths of all quantized layers (6 h + i for Llama)
_MLP_OUT = {"down_proj", "fc2", "w2", "dense_4h_to_h", "c_proj"}  # layers whose input is intermediate-wide
_MLP = _MLP_OUT | {"gate_proj", "up_proj", "fc1", "w1", "w3", "dense_h_to_4h", "c_fc", "gate_up_proj"}
_PRESETS = {"attention": ["q_proj", "v_proj"], "attention-all": ["q_proj", "k_proj", "v_proj", "o_proj"]}
_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FRACTION_ENV = "QLORA_SWEEP_GPU_FRACTION"  # set by the sweep: the share of the GPU this trial may use
CAP_ENV = "QLORA_SWEEP_GPU_MEMORY_GB"  # set by the sweep from resources.gpu_memory_gb: memory of "a GPU"


@dataclass
class MemoryEstimate:
    weights_gb: float
    lora_gb: float
    activations_gb: float
    logits_gb: float
    total_gb: float
    trainable_params: int

    def as_dict(self) -> dict:
        return asdict(self)


def _split_params(model_config) -> tuple[int, int, int]:
    """(quantizable linear params in the decoder, other params, number of layers) from a meta model,
    built once per model config (a plan asks for every combination and every trials-per-GPU count)."""
    return _split_params_of(model_config.to_json_string())


@functools.lru_cache(maxsize=16)
def _split_params_of(config_json: str) -> tuple[int, int, int]:
    from transformers import AutoConfig

    raw = json.loads(config_json)
    model_config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    head = model.get_output_embeddings()
    linear = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
    )
    total = sum(p.numel() for p in model.parameters())
    return linear, total - linear, model_config.num_hidden_layers


def count_params(model_config) -> int:
    """All parameters of the model (meta device, no weights): what its FLOPs per token are made of."""
    linear, other, _ = _split_params(model_config)
    return linear + other


def estimate(
    cfg: TrialConfig,
    model_config,
    trainable_params: int,
    gradient_checkpointing: bool,
    on_gpu: bool = True,
    compiled: bool = True,
) -> MemoryEstimate:
    """Peak memory of one trial (one worker) in GiB, with its layers compiled or eager (GPU)."""
    linear, other, layers = _split_params(model_config)
    bits = cfg.quantization.bits
    per_weight = {4: 0.5 * 1.03, 8: 1.0 * 1.01, 16: 2.0}[bits]  # + quantization constants
    wide = 2 if on_gpu else 4
    weights = linear * per_weight + other * wide
    lora = trainable_params * 16  # fp32 weight + grad + two Adam moments
    h = model_config.hidden_size
    i = getattr(model_config, "intermediate_size", 4 * h)
    tokens = cfg.training.batch_size * cfg.training.max_seq_len
    per_layer_token = _per_layer_token(cfg, h, i) * wide * (EAGER_ACTS if on_gpu and not compiled else 1.0)
    if gradient_checkpointing:  # layer inputs kept, one layer's activations live at a time
        acts = tokens * (layers * h * wide + per_layer_token)
    else:
        acts = tokens * layers * per_layer_token
    logits = min(tokens, CHUNK) * model_config.vocab_size * 4 * 3  # chunk logits, softmax, grad (fp32)
    total = weights + lora + acts + logits + (CUDA_CONTEXT_GB * GIB if on_gpu else 0)
    return MemoryEstimate(weights / GIB, lora / GIB, acts / GIB, logits / GIB, total / GIB, trainable_params)


def _per_layer_token(cfg: TrialConfig, h: int, i: int) -> float:
    """Saved elements per token and decoder layer (see the constants above)."""
    spec = cfg.lora.target_modules
    names = spec if isinstance(spec, list) else _PRESETS.get(spec, _ALL)
    leaves = [n.rsplit(".", 1)[-1] for n in names]
    widths = sum(i if leaf in _MLP_OUT else h for leaf in leaves)
    elems = A_H * h + A_I * i
    if any(leaf in _MLP for leaf in leaves):
        elems += h + i
    if cfg.lora.dropout > 0:
        elems += DROPOUT_COPY * widths
    if cfg.quantization.bits == 8 and cfg.quantization.int8_matmul == "llm.int8":
        elems += INT8_KEEP * (6 * h + i)
    return elems


def grant_gpu_share(fraction: float, cap_gb: float | None) -> None:
    """Tell this process's trial its share of the GPU and the memory of "a GPU" (resources.gpu_memory_gb),
    which `gpu_budget_gb` and `cap_process_memory` read. Set by every process that trains: the Tune
    trial's, and each Ray Train worker of a multi-worker trial, whose process the Tune trial's
    environment does not reach. A reused worker's last sweep may have had a cap this one has not."""
    os.environ[FRACTION_ENV] = str(min(1.0, fraction))
    if cap_gb:
        os.environ[CAP_ENV] = str(cap_gb)
    else:
        os.environ.pop(CAP_ENV, None)


def gpu_memory_gb(device: torch.device) -> float:
    """The memory of "a GPU" for this trial: the device's, or less where the sweep caps it
    (resources.gpu_memory_gb: to share a GPU with other work, or to emulate a smaller one)."""
    total = torch.cuda.get_device_properties(device).total_memory / GIB
    cap = float(os.environ.get(CAP_ENV) or total)
    return min(total, cap)


def gpu_budget_gb(device: torch.device) -> float:
    """This trial's share of the GPU: its memory (capped) times the fraction the sweep granted."""
    return gpu_memory_gb(device) * float(os.environ.get(FRACTION_ENV, "1"))


def cap_process_memory(device: torch.device) -> float:
    """Hold this process to its budget (torch raises OutOfMemoryError past it), so a trial that needs
    more than planned fails alone instead of taking memory its neighbours on the GPU were promised."""
    budget = gpu_budget_gb(device)
    total = torch.cuda.get_device_properties(device).total_memory / GIB
    # Set every time (a reused worker's last trial may have had a smaller share); the CUDA context
    # is outside torch's allocator but inside the budget.
    torch.cuda.set_per_process_memory_fraction(min(1.0, max(budget - CUDA_CONTEXT_GB, 0.1) / total), device)
    return budget


# On the CPU (fp32, eager, sdpa's math kernel keeping its scores) peaks run well above the GPU-calibrated
# estimate: SmolLM2-135M at 16 x 512 was killed at 21.3 GB where the estimate says 9.0.
CPU_FACTOR = 2.5


def host_available_gb() -> float:
    """Memory the kernel says it can still give (MemAvailable), or total RAM where /proc is absent."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("MemAvailable")) / 2**20
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def use_expandable_segments(device: torch.device) -> None:
    """Let the CUDA caching allocator grow segments in place, unless the user configured it.

    Packed batches and compiled graphs otherwise leave the allocator holding blocks it cannot reuse:
    25.8 GiB reserved for a 19.1 GiB allocated peak on the reference job (benchmarks/RESULTS.md),
    and reserved memory is what a GPU shared by several trials runs out of.
    """
    if device.type == "cuda" and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ:
        torch._C._accelerator_setAllocatorSettings("expandable_segments:True")
