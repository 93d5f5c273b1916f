"""The reference job's inputs, built once per machine: a random-weight model directory and the data.

The speed benchmark needs an OpenLLaMA-3b-v2-shaped model (same layer sizes, so the same FLOPs and
bytes per token as the real one) but not its weights, and a dataset with the seed study's length
profile. Random weights train at the same speed as real ones; what changes is only the loss value.
Everything lands under one directory (default /tmp/qlora-bench) and is reused when already there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(os.environ.get("QLORA_BENCH_DIR", "/tmp/qlora-bench"))
CONFIG = Path(__file__).resolve().parents[1] / "examples" / "models" / "open_llama_3b_v2" / "config.json"
ROWS, DATA_SEED, MEDIAN_WORDS = 5000, 0, 120
VOCAB = 32000
MAX_LEN = 512  # per-example cap, as in the seed recipe (max_seq_length=512)
# The seed study's recipe, shared by the speed row (seed_recipe.py) and the quality check (quality.py):
# peft LoraConfig arguments (target modules per row) and trl SFTConfig arguments.
SEED_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM"}
SEED_TRAINING = {
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 1,
    "packing": False,
    "save_strategy": "no",
    "report_to": "none",
    "dataloader_num_workers": 0,
}


def model_config_dict(layers: int | None = None, hidden: int | None = None) -> dict:
    """OpenLLaMA-3b-v2's config (the repository's copy), optionally shrunk for CPU tests."""
    cfg = json.loads(CONFIG.read_text())
    cfg.pop("torch_dtype", None)
    if layers:
        cfg["num_hidden_layers"] = layers
    if hidden:
        cfg.update(
            hidden_size=hidden, intermediate_size=hidden * 27 // 10, num_attention_heads=max(1, hidden // 100)
        )
    return cfg


def total_params(model_path: Path) -> int:
    """Every parameter of the model at `model_path`, counted on the meta device from its config.json alone.

    The real count, not a closed formula: a formula that gives every attention head its own K/V
    projections overcounts grouped-query models (~12% for 8 KV heads of 32 at OpenLLaMA-3b-v2's
    size) and so overstates their MFU.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_path)))
    return sum(p.numel() for p in model.parameters())


def mfu(tokens_per_s: float, params: int, peak_flops: float) -> float:
    """Model FLOPs utilisation of LoRA training on a frozen base of `params` parameters.

    Per token the forward pass costs 2 FLOPs per parameter and the backward pass another 2 (the
    gradients of the activations; the frozen weights get none, and the adapter is negligible): 4N.
    """
    return 4 * params * tokens_per_s / peak_flops


def data_path(root: Path = ROOT) -> Path:
    return root / "data.jsonl"


def model_dir(root: Path = ROOT) -> Path:
    return root / "model"


def write_data(root: Path = ROOT, rows: int = ROWS) -> Path:
    from trainables.sample_data import generate_rows

    path = data_path(root)
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in generate_rows(rows, seed=DATA_SEED, median_words=MEDIAN_WORDS):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.rename(path)
    return path


def train_tokenizer(texts: list[str], vocab: int = VOCAB):  # noqa: ANN201 - a PreTrainedTokenizerFast
    """Byte-level BPE (Llama's special ids: <unk>=0, <s>=1, </s>=2) trained on the benchmark's own text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def build_model(root: Path = ROOT, layers: int | None = None, hidden: int | None = None) -> Path:
    """Random bf16 weights of the reference shape (initialised on the GPU when there is one), plus tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dest = model_dir(root)
    if (dest / "config.json").is_file() and (dest / "tokenizer.json").is_file():
        return dest
    rows = [json.loads(line) for line in write_data(root).read_text(encoding="utf-8").splitlines()]
    from trainables.data import ALPACA  # the prompt's words belong to the vocabulary, as with a real 32k one

    texts = [f"{ALPACA} {r['product']} {r['category']} {r['description']}" for r in rows]
    tok = train_tokenizer(texts)
    config = LlamaConfig(**model_config_dict(layers, hidden))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    del model
    tmp.rename(dest)
    return dest


def epoch_tokens(root: Path = ROOT, max_len: int = MAX_LEN) -> dict:
    """Tokens in one epoch of the reference job (alpaca prompt + response + EOS, capped at max_len)."""
    from transformers import AutoTokenizer

    from trainables.data import ALPACA

    cache = root / f"epoch_tokens_{max_len}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    tok = AutoTokenizer.from_pretrained(str(model_dir(root)))
    rows = [json.loads(line) for line in data_path(root).read_text(encoding="utf-8").splitlines()]
    lengths = []
    for r in rows:
        prompt = tok(ALPACA.format(product=r["product"], category=r["category"]))["input_ids"]
        response = tok(r["description"], add_special_tokens=False)["input_ids"]
        lengths.append(min(len(prompt) + len(response) + 1, max_len))
    lengths.sort()
    info = {
        "rows": len(rows),
        "tokens": sum(lengths),
        "median_len": lengths[len(lengths) // 2],
        "max_len": lengths[-1],
        "median_words": sorted(len(r["description"].split()) for r in rows)[len(rows) // 2],
    }
    cache.write_text(json.dumps(info))
    return info


def prepare(root: Path = ROOT, layers: int | None = None, hidden: int | None = None) -> dict:
    """Data, model directory and token counts; idempotent."""
    write_data(root)
    build_model(root, layers, hidden)
    return {
        "root": str(root),
        "model": str(model_dir(root)),
        "data": str(data_path(root)),
        **epoch_tokens(root),
    }


def prompt_completion_rows(root: Path = ROOT) -> list[dict]:
    """The reference rows as trl prompt/completion pairs (loss on the completion only, as ours)."""
    from trainables.data import ALPACA

    rows = [json.loads(line) for line in data_path(root).read_text(encoding="utf-8").splitlines()]
    return [
        {
            "prompt": ALPACA.format(product=r["product"], category=r["category"]),
            "completion": r["description"],
        }
        for r in rows
    ]


def step_timer(warmup: int):  # noqa: ANN201 - a transformers TrainerCallback
    """A Trainer callback timing optimizer steps after `warmup` (synchronising at each step end)."""
    import time

    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201, ARG002
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

        def step_s(self) -> float:
            t = self.times[warmup - 1 :]
            return (t[-1] - t[0]) / (len(t) - 1)

    return StepTimer()


def trainer_result(
    name: str,
    recipe: str,
    trainer,
    timer,
    per_step_rows: int,
    micro_batch: str,
    out: Path,
    extra: dict | None = None,
) -> dict:
    """One JSON row for a Trainer-based recipe: steady-state tokens/s from the (packed) rows' mean length."""
    import torch

    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    mean_len = sum(lengths) / len(lengths)
    step_s = timer.step_s()
    row = {
        "name": name,
        "recipe": recipe,
        "micro_batch": micro_batch,
        "step_s": step_s,
        "tokens_per_step": mean_len * per_step_rows,
        "tokens_per_s": mean_len * per_step_rows / step_s,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0,
        "reserved_gb": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else 0.0,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        **(extra or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print("row", json.dumps(row), flush=True)
    return row
