"""Run the configured judge over a trial's generations, never letting a judge failure end the trial.

`evaluation` must not know about built-in model names, so the loader that resolves them for the
local judge is passed in from here.
"""

from __future__ import annotations

import logging

from evaluation.judge import Sample, summarize, win_rate
from evaluation.judge_choice import build_judge
from trainables.config import ModelConfig, QuantizationConfig, TrialConfig

log = logging.getLogger(__name__)


def load_judge_model(path: str):
    """A 16-bit model and tokenizer for the local judge (built-in names, hub ids or directories)."""
    from trainables.model import load_base_model, load_tokenizer

    model_cfg = ModelConfig(path=path)
    return load_base_model(model_cfg, QuantizationConfig(bits=16)), load_tokenizer(model_cfg)


def judge_outputs(cfg: TrialConfig, records: list[dict], base_outputs: list[str] | None = None) -> dict:
    """Adds judge_score / judge_reason to each record and returns the per-trial summary; with
    `judge.pairwise` also the win rate against the base model's outputs or the references."""
    if cfg.judge.backend == "none" or not records:
        return {}
    try:
        judge = build_judge(cfg.judge, load_local=load_judge_model)
        samples = [Sample(r["product"], r["category"], r["output"], r["reference"]) for r in records]
        verdicts = judge.score(samples)
        summary = summarize(verdicts)
        if cfg.judge.pairwise != "none":
            others = base_outputs if cfg.judge.pairwise == "base" else [r["reference"] for r in records]
            if others is not None:
                rivals = [
                    Sample(r["product"], r["category"], o, r["reference"]) for r, o in zip(records, others)
                ]
                summary[f"judge_win_rate_vs_{cfg.judge.pairwise}"] = win_rate(judge.compare(samples, rivals))
    except Exception as err:  # noqa: BLE001 - a broken judge is recorded, the trial's training stands
        log.warning("judge failed: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
        return {"judge_missing": len(records), "judge_error": type(err).__name__}
    for record, verdict in zip(records, verdicts):
        record["judge_score"] = verdict.score
        record["judge_reason"] = verdict.reason
    return summary


def calibration_references(cfg: TrialConfig) -> list:
    """Held-out reference descriptions: good texts the calibration set corrupts."""
    from trainables.data import load_rows, split_by_product

    _, held = split_by_product(load_rows(cfg.data), cfg.data.eval_rows, cfg.data.seed)
    rows = sorted(held, key=lambda r: (r["product"], r["description"]))[: max(8, cfg.generation.num_prompts)]
    return [Sample(r["product"], r["category"], r["description"], r["description"]) for r in rows]


def calibrate_judge(cfg: TrialConfig) -> dict:
    """How far the configured judge can be trusted: pairwise accuracy and position-swap consistency.

    Every verdict is asked anew (`calibrate` bypasses the cache for reads); the answers are still
    written to the cache, so the sweep's trials score with the judge as it answers now."""
    from evaluation.calibration import calibrate

    judge = build_judge(cfg.judge, load_local=load_judge_model)
    if judge is None:
        return {}
    return calibrate(
        judge, calibration_references(cfg), seed=cfg.generation.seed, min_accuracy=cfg.judge.min_accuracy
    )
