"""Issue 23's grid of real learning curves: every config of a space trained by `run_trial` itself.

Each config is one ordinary trial (the curve is exactly what `run_trial` reports to a sweep: eval
loss at every eval interval), trained one after another in this process, so a base model is loaded
once per bits value and reused (trainables/base_cache.py). Several processes (`--part i/n`) split the
list in contiguous chunks (configs are ordered by bits, so each part loads few bases) and share the
GPU; their seconds are therefore those of a shared GPU, the same for every config, which is what
the replay compares (costs relative to each other). One JSON line per (config, seed):

  {"config": {...search paths...}, "seed": 42, "base_eval_loss": 3.71, "setup_s": 4.2, "total_steps": 30,
   "curve": [{"step": 5, "eval_loss": 2.91, "train_s": 1.3}, ...], "final_s": 12.0}

    python -m benchmarks.grid --out benchmarks/grids/smollm2-sample.jsonl --part 0/8
    python -m benchmarks.grid --meta benchmarks/grids/smollm2-sample.meta.json   # the space and base
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from trainables.config import TrialConfig, apply_params, validate
from trainables.reporting import PrintReporter
from trainables.trial import run_trial

SPACE = {
    "quantization.bits": {"choice": [4, 8, 16]},
    "lora.r": {"choice": [4, 8, 16, 32]},
    "lora.target_modules": {"choice": ["attention", "all-linear", "all-linear+lm_head"]},
    "training.lr": {"choice": [4.0e-4, 8.0e-4, 1.6e-3]},
}
# The base of every trial: SmolLM2-135M-Instruct on the bundled data, 3 full epochs of our defaults
# (16 x 512 packed: 10 steps an epoch), eval every 5 steps, no generation or judge (they do not
# change the curve; the replay charges their time through final_s of a trial that has them).
BASE = {
    "model": {"path": "smollm2-135m"},
    "data": {"source": "sample", "eval_rows": 100},
    "training": {"epochs": 3, "eval_interval": 5, "keep_checkpoints": 1},
    "generation": {"num_prompts": 0},
}
SEEDS = (42, 7)


def configs() -> list[dict]:
    keys = list(SPACE)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(SPACE[k]["choice"] for k in keys))]


def record(params: dict, seed: int, sets: dict) -> dict:
    """One trial of the grid: its curve, as its reporter saw it."""
    base = apply_params(BASE, {"training.seed": seed, **sets})
    cfg = validate(TrialConfig, apply_params(base, params))
    with tempfile.TemporaryDirectory() as tmp:
        reporter = PrintReporter(tmp, keep=1, echo=lambda _: None)
        t0 = time.perf_counter()
        final = run_trial(cfg, reporter)
        wall = time.perf_counter() - t0
    setup = sum(final.get(f"phase_{p}_s", 0.0) for p in ("data", "load", "lora", "base_eval"))
    return {
        "config": params,
        "seed": seed,
        "base_eval_loss": final["base_eval_loss"],
        "setup_s": round(setup, 3),
        "total_steps": final["total_steps"],
        "curve": [
            {"step": m["step"], "eval_loss": m["eval_loss"], "train_s": round(m["elapsed_s"], 3)}
            for m in reporter.history
        ],
        "final_s": round(wall, 3),
        "base_reused": final["base_reused"],
        "compiled": final["compiled"],
        "phases": {k: v for k, v in final.items() if k.startswith("phase_")},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--part", default="0/1", help="i/n: this process's contiguous share of the configs")
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    ap.add_argument("--limit", type=int, default=None, help="at most this many configs (a quick check)")
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], help="k=v on every trial (checks on a CPU)"
    )
    ap.add_argument("--meta", type=Path, help="write the space and base (the replay's sidecar) and exit")
    args = ap.parse_args(argv)
    if args.meta:
        args.meta.write_text(
            json.dumps(
                {
                    "space": SPACE,
                    "base": BASE,
                    "seeds": args.seeds,
                    "command": "python -m benchmarks.grid --part i/n (benchmarks/grid_gpu.sh)",
                },
                indent=1,
            )
        )
        return
    sets = {k: v for k, _, v in (s.partition("=") for s in args.sets)}
    sets = {k: json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v for k, v in sets.items()}
    i, n = map(int, args.part.split("/"))
    todo = [(c, s) for c in configs()[: args.limit] for s in args.seeds]
    chunk = -(-len(todo) // n)
    mine = todo[i * chunk : (i + 1) * chunk]
    done = set()
    if args.out.is_file():  # resumable: a part cut off by the call's time limit continues where it was
        done = {
            json.dumps([r["config"], r["seed"]], sort_keys=True)
            for r in map(json.loads, args.out.read_text().splitlines())
            if r
        }
    with args.out.open("a") as f:
        for params, seed in mine:
            if json.dumps([params, seed], sort_keys=True) in done:
                continue
            row = record(params, seed, sets)
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(
                f"{params} seed {seed}: {row['curve'][-1]['eval_loss']:.4f} in {row['final_s']:.1f}s",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
