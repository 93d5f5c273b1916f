"""The seed study's recipe, timed: trl SFTTrainer, batch 4 x accum 4, gradient checkpointing, paged AdamW.

Classic QLoRA: bitsandbytes base, `prepare_model_for_kbit_training`, LoRA r=8 (dropout 0.05), one
example per row padded to the batch's longest (max 512 tokens), loss on the completion only. Runs in
its own process; writes one JSON row to OUT/results.jsonl (see benchmarks/speed.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

TARGETS = {"attn": ["q_proj", "v_proj"], "all": "all-linear"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(common.ROOT))
    p.add_argument("--out", required=True)
    p.add_argument("--row", default="all-4bit", help="attn-4bit | all-4bit | all-8bit")
    p.add_argument("--name", default="seed")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--optim", default="paged_adamw_32bit")
    a = p.parse_args()

    import datasets
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    root = Path(a.root)
    targets, bits = a.row.split("-")
    if bits == "8bit":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(common.model_dir(root)))
    model = AutoModelForCausalLM.from_pretrained(
        str(common.model_dir(root)), quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0}
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    load_s = time.perf_counter() - t0
    ds = datasets.Dataset.from_list(common.prompt_completion_rows(root))
    cfg = SFTConfig(
        **common.SEED_TRAINING,
        output_dir="/tmp/seed-out",
        gradient_checkpointing=True,
        optim=a.optim,
        bf16=True,
        max_length=common.MAX_LEN,
        max_steps=a.warmup + a.steps,
        logging_steps=1000,
        seed=42,
    )
    peft_cfg = LoraConfig(**common.SEED_LORA, target_modules=TARGETS[targets])
    timer = common.step_timer(a.warmup)
    trainer = SFTTrainer(
        model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=peft_cfg, callbacks=[timer]
    )
    trainer.train()
    common.trainer_result(
        a.name,
        f"seed (trl SFTTrainer, {a.optim})",
        trainer,
        timer,
        16,
        "4 x <=512 padded, accum 4",
        Path(a.out),
        {"load_s": load_s, "gradient_checkpointing": True, "row": a.row},
    )


if __name__ == "__main__":
    main()
