"""Issue 15's DDP figure: tokens/s of one trial on 1 worker and on 2 Ray Train workers, same global batch.

Each measurement is a one-trial sweep through `run_sweep` (the product's path): with
`resources.workers_per_trial=1` a plain Tune trial on one GPU, with 2 a Tune trial whose
TorchTrainer runs the same loop on 2 workers (NCCL, one GPU each), each taking half of every
micro-batch (`keep_effective_batch`), so both runs take the same optimizer steps on the same rows.
tokens/s is the steady-state rate between the trial's last two reports (the first window holds the
warm-up), from Ray's result.json; peak memory per GPU is nvidia-smi's memory.used maximum during
the run (CUDA context and allocator cache included), plus rank 0's `torch.cuda.max_memory_allocated`.

    python -m benchmarks.ddp --workers 1,2 --steps 16 --out $OUT
    python -m benchmarks.ddp --model tiny --gpu 0 --fake-gpus ...    # CPU check (gloo)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

from benchmarks.scaling import UtilPoller, gpu_inventory, util_summary


def sweep_config(args: argparse.Namespace, workers: int, storage: Path):
    from sweep.config import load_sweep_config

    return load_sweep_config(
        None,
        [
            f"name=ddp-w{workers}",
            f"storage_path={storage}",
            "max_failures=0",
            f"model.path={args.model_path}",
            f"data.source={args.data}",
            "lora.r=8",
            f"lora.target_modules={args.targets}",
            "quantization.bits=4",
            f"training.batch_size={args.batch_size}",
            f"training.grad_accum={args.grad_accum}",
            f"training.max_steps={args.steps}",
            f"training.eval_interval={args.steps // 2}",
            "training.eval_batches=1",
            f"training.compile={args.compile}",
            "generation.num_prompts=0",
            "judge.backend=none",
            "search.space={lora.r: {choice: [8]}}",
            "search.num_samples=1",
            "search.max_concurrent_trials=1",
            "search.scheduler.type=none",
            f"resources.workers_per_trial={workers}",
            f"resources.cpu={args.cpus_per_worker}",
            f"resources.gpu={args.gpu}",
            "resources.keep_effective_batch=true",
            f"tracking.tracking_uri=sqlite:///{storage / 'mlflow.db'}",
            "tracking.register_best=false",
            *args.set,
        ],
    )


def reports(experiment: Path) -> list[dict]:
    """The one trial's reports as Ray Tune recorded them."""
    files = sorted(experiment.glob("*/result.json"))
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def measure(args: argparse.Namespace, workers: int, poller: UtilPoller) -> dict:
    from sweep.runner import run_sweep

    work = Path(args.work) / f"w{workers}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = sweep_config(args, workers, work)
    t0 = time.time()
    outcome = run_sweep(cfg)
    t1 = time.time()
    rows = reports(work / cfg.name)
    row = {
        "workers": workers,
        "finished": outcome.finished,
        "failed": outcome.failed,
        "errors": outcome.errors,
        "sweep_wall_s": round(t1 - t0, 1),
        "reports": len(rows),
    }
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        row["tokens_per_s"] = (b["tokens_per_s"] * b["elapsed_s"] - a["tokens_per_s"] * a["elapsed_s"]) / (
            b["elapsed_s"] - a["elapsed_s"]
        )
        row["tokens_per_s_whole_run"] = b["tokens_per_s"]
        row["step_s"] = (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])
        row.update(
            {
                k: b.get(k)
                for k in (
                    "workers",
                    "world_rank",
                    "peak_mem_gb",
                    "train_loss",
                    "eval_loss",
                    "base_eval_loss",
                    "gradient_checkpointing",
                    "trainable_params",
                )
            }
        )
        row["reported_workers"] = row.pop("workers", None) or workers
        row["workers"] = workers
    row["per_gpu"] = util_summary(poller.samples, t0, t1)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument(
        "--batch-size", type=int, default=8, help="global micro-batch (rows), split over the workers"
    )
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--targets", default="all-linear")
    p.add_argument("--compile", choices=("true", "false"), default="false")
    p.add_argument("--gpu", default="1", help="GPUs per worker (0 on the CPU: gloo)")
    p.add_argument("--gpus", type=int, default=2, help="GPUs Ray may use")
    p.add_argument("--cpus-per-worker", type=float, default=8)
    p.add_argument("--fake-gpus", action="store_true")
    p.add_argument("--model", default="bench")
    p.add_argument("--data", default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--out", default="benchmarks/runs/ddp")
    p.add_argument("--work", default="/tmp/qlora-ddp")
    p.add_argument("--set", action="append", default=[])
    p.add_argument(
        "--deadline-s", type=float, default=None, help="keep the runs that finished, stop Ray, exit"
    )
    args = p.parse_args(argv)
    if args.model == "bench":
        from benchmarks import common

        root = Path(args.root) if args.root else common.ROOT
        args.model_path, args.data = str(common.model_dir(root)), args.data or str(common.data_path(root))
    else:
        args.model_path, args.data = args.model, args.data or "sample"
    inventory = gpu_inventory()
    if not args.fake_gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(args.gpus))
    import ray

    ray.init(
        num_cpus=max(2, int(args.cpus_per_worker * args.gpus) + 1), num_gpus=args.gpus, log_to_driver=True
    )
    poller = UtilPoller().start()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "gpu_inventory": inventory,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "steps": args.steps,
        "targets": args.targets,
        "compile": args.compile,
        "runs": [],
    }
    if args.deadline_s:
        threading.Thread(target=_deadline, args=(args.deadline_s, out, result, poller), daemon=True).start()
    try:
        for w in (int(x) for x in args.workers.split(",")):
            result["runs"].append(measure(args, w, poller))
            _write(out, result)  # after each run: a timeout keeps what finished
    finally:
        poller.stop()
        ray.shutdown()
    _write(out, result)
    print(table(result), flush=True)


def _deadline(seconds: float, out: Path, result: dict, poller: UtilPoller) -> None:
    time.sleep(seconds)
    print(f"deadline {seconds}s reached: keeping the finished runs, stopping Ray", flush=True)
    poller.stop()
    try:
        result["interrupted"] = True
        _write(out, result)
        print(table(result), flush=True)
    finally:
        import ray

        ray.shutdown()
        os._exit(3)


def _write(out: Path, result: dict) -> None:
    runs = {r["workers"]: r for r in result["runs"] if r.get("tokens_per_s")}
    if 1 in runs and 2 in runs:
        result["speedup_2_vs_1"] = runs[2]["tokens_per_s"] / runs[1]["tokens_per_s"]
    (out / "ddp.json").write_text(json.dumps(result, indent=1, default=str))


def table(result: dict) -> str:
    lines = [
        "| workers | tokens/s (last window) | tokens/s (whole run) | s/step | rank-0 peak alloc GiB | "
        "nvidia-smi max used GiB per GPU | mean util % per GPU | train loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        if not r.get("tokens_per_s"):
            lines.append(f"| {r['workers']} | failed: {r.get('errors')} | | | | | | |")
            continue
        mem = ", ".join(f"GPU {g}: {v['max_mem_used_gib']}" for g, v in r["per_gpu"].items())
        util = ", ".join(f"GPU {g}: {v['mean_util_pct']}" for g, v in r["per_gpu"].items())
        lines.append(
            f"| {r['workers']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_whole_run']:.0f} | "
            f"{r['step_s']:.3f} | {r['peak_mem_gb']:.2f} | {mem} | {util} | {r['train_loss']:.4f} |"
        )
    if "speedup_2_vs_1" in result:
        lines.append(f"2 workers / 1 worker tokens/s: {result['speedup_2_vs_1']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
