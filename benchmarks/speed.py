"""Issue 14's speed benchmark: the seed recipe, Unsloth and our trainable, side by side on one GPU.

Each recipe runs in its own process (fresh CUDA context, so peaks do not leak between rows, and
Unsloth's import-time patching of transformers stays in its process). Nobody trains 3 full epochs:
each process times a window of steady-state steps after a warm-up window and the driver
extrapolates to 3 epochs of the reference job (tokens of one epoch are counted with the same
tokenizer). One JSON line per row goes to OUT/results.jsonl; the table is printed last.

    python -m benchmarks.speed suite --out $OUT                 # everything (GPU)
    python -m benchmarks.speed ours --name x --set lora.r=8 ...  # one row of ours
    python -m benchmarks.speed table OUT/results.jsonl           # the markdown table again
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

PEAK_FLOPS = 989e12  # H100 SXM dense bf16 (datasheet); the MFU column states it
EPOCHS = 3
ATTN, ALL = "lora.target_modules=attention", "lora.target_modules=all-linear"
ROWS = {  # name -> the config overrides on top of our defaults (r=8 is the default rank)
    "attn-4bit": [ATTN, "quantization.bits=4"],
    "all-4bit": [ALL, "quantization.bits=4"],
    "all-8bit": [ALL, "quantization.bits=8"],
}


class _Collect:  # noqa: D101
    """A reporter that keeps every report and writes no checkpoints (none are needed for timing)."""

    def __init__(self, profile_to: Path | None = None) -> None:
        self.history: list[dict] = []
        self.profile_to, self.prof = profile_to, None

    def restore_dir(self):  # noqa: ANN201
        return None

    def checkpoint_dir(self, step: int):  # noqa: ANN201, ARG002
        return None

    def _profile(self, start: bool) -> None:
        if start:
            self._t = time.perf_counter()
            self.prof = _profile_start()
        else:
            _profile_stop(self.prof, self.profile_to, time.perf_counter() - self._t)

    def report(self, metrics: dict, checkpoint) -> None:  # noqa: ANN001, ARG002
        self.history.append(dict(metrics))
        if self.profile_to is not None and len(self.history) in (1, 2):
            self._profile(len(self.history) == 1)
        print(
            "  report",
            {k: metrics[k] for k in ("step", "train_loss", "tokens_per_s", "peak_mem_gb", "elapsed_s")},
            flush=True,
        )


def _profile_start():  # noqa: ANN202
    import torch

    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    prof = torch.profiler.profile(activities=acts)
    prof.__enter__()
    return prof


def _profile_stop(prof, path: Path, wall_s: float) -> None:  # noqa: ANN001
    """Kernel time by op over the second window, and how much of the wall time the GPU was busy."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    prof.__exit__(None, None, None)
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6
    text = events.table(sort_by="self_device_time_total", row_limit=45, max_name_column_width=70)
    path.write_text(
        f"window wall {wall_s:.2f}s, GPU kernel time {busy:.2f}s ({100 * busy / wall_s:.0f}% busy)\n{text}"
    )
    print(text[:6000], f"\nGPU busy {busy:.2f}s of {wall_s:.2f}s", flush=True)


def run_ours(
    name: str, overrides: list[str], window: int, root: Path, profile_to: Path | None = None
) -> dict:
    """One row of our trainable: defaults + overrides, steady-state rate over the third window."""
    import torch

    from trainables.config import TrialConfig, apply_overrides, validate
    from trainables.memory import estimate
    from trainables.model import count_trainable_params_for, load_config
    from trainables.trial import run_trial

    base = {
        "model": {"path": str(common.model_dir(root))},
        "data": {"source": str(common.data_path(root))},
        "training": {"max_steps": 3 * window, "eval_interval": window, "eval_batches": 2},
    }
    cfg = validate(TrialConfig, apply_overrides(base, overrides))
    rep = _Collect(profile_to)
    t0 = time.perf_counter()
    run_trial(cfg, rep)
    wall = time.perf_counter() - t0
    w1, a, b = rep.history[0], rep.history[-2], rep.history[-1]
    rate, rate_w2 = _train_rate(a, b), _train_rate(w1, a)
    model_cfg = load_config(cfg.model)
    trainable = count_trainable_params_for(model_cfg, cfg.lora)
    est = estimate(cfg, model_cfg, trainable, bool(b["gradient_checkpointing"]), on_gpu=True)
    return {
        "name": name,
        "recipe": "ours",
        "overrides": overrides,
        "tokens_per_s": rate,
        "tokens_per_s_window2": rate_w2,
        "peak_gb": b["peak_mem_gb"],
        "reserved_gb": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None,
        "trainable_params": b["trainable_params"],
        "estimate_gb": est.total_gb,
        "estimate": est.as_dict(),
        "gradient_checkpointing": b["gradient_checkpointing"],
        "train_loss": b["train_loss"],
        "wall_s": wall,
        "micro_batch": f"{cfg.training.batch_size} x {cfg.training.max_seq_len}"
        + (" packed" if cfg.training.packing else ""),
    }


def _train_rate(a: dict, b: dict) -> float:
    """Tokens per second of training between two reports (eval time excluded, as the peers report)."""
    tokens = b["tokens_per_s"] * b["elapsed_s"] - a["tokens_per_s"] * a["elapsed_s"]
    return tokens / ((b["elapsed_s"] - b["eval_s"]) - (a["elapsed_s"] - a["eval_s"]))


def finish(row: dict, info: dict, params: int) -> dict:
    """Minutes for 3 epochs and MFU from a row's steady-state tokens/s."""
    rate = row.get("tokens_per_s") or 0
    row["minutes_3_epochs"] = EPOCHS * info["tokens"] / rate / 60 if rate else None
    row["mfu"] = common.mfu(rate, params, PEAK_FLOPS) if rate else None
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| row | recipe | micro-batch | min (3 ep) | tokens/s | MFU | peak GiB | est. GiB | est/peak | trainable |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['name']} | {r.get('recipe', '')} | | failed: {r['error'][:80]} | | | | | | |")
            continue
        est = r.get("estimate_gb")
        ratio = f"{est / r['peak_gb']:.2f}" if est and r.get("peak_gb") else ""
        lines.append(
            f"| {r['name']} | {r['recipe']} | {r.get('micro_batch', '')} | {r['minutes_3_epochs']:.2f} | "
            f"{r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f}% | {r['peak_gb']:.1f} | "
            f"{f'{est:.1f}' if est else ''} | {ratio} | {r.get('trainable_params', '')} |"
        )
    return "\n".join(lines)


def _child(cmd: list[str], out: Path, timeout: int, env: dict | None = None) -> None:
    """Run one row in its own process; a failure becomes a row with the error, not a dead suite."""
    print("\n$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=timeout, env={**os.environ, **(env or {})}, check=False)
        ok = proc.returncode == 0
        err = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        ok, err = False, f"timeout {timeout}s"
    print(f"  ({time.perf_counter() - t0:.0f}s)", flush=True)
    if not ok:
        with (out / "results.jsonl").open("a") as f:
            f.write(json.dumps({"name": cmd[-1] if "--name" in cmd else cmd[1], "error": err}) + "\n")


def suite(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = common.prepare(Path(args.root))
    print("prepared", info, flush=True)
    py = sys.executable
    plan = args.plan.split(",")
    for item in plan:
        kind, _, name = item.partition(":")
        if kind == "ours":
            extra = args.extra.get(name, []) if isinstance(args.extra, dict) else []
            profile = name.endswith("+prof")
            row = name.split("+")[0]
            cmd = [
                py,
                "-m",
                "benchmarks.speed",
                "ours",
                *(["--profile"] if profile else []),
                "--root",
                args.root,
                "--out",
                str(out),
                "--window",
                str(args.window),
                *sum((["--set", s] for s in ROWS[row] + extra), []),
                "--name",
                name,
            ]
            _child(cmd, out, args.timeout)
        elif kind in ("seed", "unsloth"):
            script = "benchmarks/seed_recipe.py" if kind == "seed" else "benchmarks/peer_unsloth.py"
            name, _, shape = name.partition("@")  # unsloth:all-8bit@4x2048 = batch 4 x 2048 tokens
            size = ["--batch", shape.split("x")[0], "--seq", shape.split("x")[1]] if shape else []
            env = {"PYTHONPATH": args.peer_path} if kind == "unsloth" else None
            cmd = [
                py,
                script,
                "--root",
                args.root,
                "--out",
                str(out),
                "--row",
                name,
                "--name",
                f"{kind}-{name}" + (f"@{shape}" if shape else ""),
                *size,
            ]
            _child(cmd, out, args.timeout, env)
    report(out / "results.jsonl", Path(args.root))


def report(path: Path, root: Path) -> None:
    info = common.epoch_tokens(root)
    params = common.total_params(common.model_dir(root))
    rows = [finish(json.loads(line), info, params) for line in path.read_text().splitlines() if line.strip()]
    path.with_name("results_final.json").write_text(
        json.dumps({"epoch": info, "params": params, "rows": rows}, indent=1)
    )
    print(f"\nepoch: {info}; params {params / 1e9:.3f} B; MFU vs {PEAK_FLOPS:.3g} FLOP/s\n")
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--out", required=True)
    s.add_argument("--root", default=str(common.ROOT))
    s.add_argument(
        "--plan", default="ours:attn-4bit,ours:all-4bit,ours:all-8bit,seed:all-4bit,unsloth:all-4bit"
    )
    s.add_argument("--window", type=int, default=10)
    s.add_argument("--timeout", type=int, default=300)
    s.add_argument("--peer-path", default="/tmp/peer")
    s.add_argument("--extra", type=json.loads, default={}, help='{"all-4bit+b8": ["training.batch_size=8"]}')
    o = sub.add_parser("ours")
    o.add_argument("--name", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--root", default=str(common.ROOT))
    o.add_argument("--window", type=int, default=10)
    o.add_argument("--set", action="append", default=[])
    o.add_argument("--profile", action="store_true", help="profile the second window (kernel times by op)")
    t = sub.add_parser("table")
    t.add_argument("results")
    t.add_argument("--root", default=str(common.ROOT))
    pr = sub.add_parser("prepare")
    pr.add_argument("--root", default=str(common.ROOT))
    pr.add_argument("--layers", type=int)
    pr.add_argument("--hidden", type=int)
    args = p.parse_args(argv)
    if args.cmd == "suite":
        suite(args)
    elif args.cmd == "ours":
        prof = Path(args.out) / f"profile_{args.name.replace('+', '_')}.txt" if args.profile else None
        Path(args.out).mkdir(parents=True, exist_ok=True)
        row = run_ours(args.name, args.set, args.window, Path(args.root), prof)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with (Path(args.out) / "results.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        print("row", json.dumps(row), flush=True)
    elif args.cmd == "table":
        report(Path(args.results), Path(args.root))
    elif args.cmd == "prepare":
        print(json.dumps(common.prepare(Path(args.root), args.layers, args.hidden)))


if __name__ == "__main__":
    main()
