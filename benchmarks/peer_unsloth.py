"""The peer, timed: Unsloth at its best setting from issue 14 (packed 2 x 4096, no checkpointing).

Runs in its own process with Unsloth's wheels first on PYTHONPATH (it needs trl <= 1.15 and
datasets < 5, and patches transformers at import, so it is imported before anything else).
LoRA r=8, dropout 0 (Unsloth's fast path), adamw_8bit, loss on the completion only. Writes one JSON
row to OUT/results.jsonl (see benchmarks/speed.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
import unsloth  # noqa: E402, F401 - must come before transformers/trl/peft
from unsloth import FastLanguageModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

TARGETS = {
    "attn": ["q_proj", "v_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(common.ROOT))
    p.add_argument("--out", required=True)
    p.add_argument("--row", default="all-4bit")
    p.add_argument("--name", default="unsloth")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()

    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    root = Path(a.root)
    targets, bits = a.row.split("-")
    t0 = time.perf_counter()
    model, tok = FastLanguageModel.from_pretrained(
        model_name=str(common.model_dir(root)),
        max_seq_length=a.seq,
        dtype=torch.bfloat16,
        load_in_4bit=bits == "4bit",
        load_in_8bit=bits == "8bit",
        local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=8,
        lora_alpha=16,
        lora_dropout=0,
        bias="none",
        target_modules=TARGETS[targets],
        use_gradient_checkpointing=False,
        random_state=42,
    )
    load_s = time.perf_counter() - t0
    ds = datasets.Dataset.from_list(common.prompt_completion_rows(root))
    cfg = SFTConfig(
        output_dir="/tmp/unsloth-out",
        per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1,
        optim="adamw_8bit",
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_ratio=0.03,
        bf16=True,
        max_length=a.seq,
        packing=True,
        max_steps=a.warmup + a.steps,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        seed=42,
        dataloader_num_workers=0,
    )
    timer = common.step_timer(a.warmup)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[timer])
    trainer.train()
    common.trainer_result(
        a.name,
        f"Unsloth {unsloth.__version__}, adamw_8bit",
        trainer,
        timer,
        a.batch,
        f"{a.batch} x {a.seq} packed",
        Path(a.out),
        {"load_s": load_s, "row": a.row},
    )


if __name__ == "__main__":
    main()
