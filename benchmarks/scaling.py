"""Issue 12's benchmark: the same sweep of the seed study's space on N GPUs, timed from Ray's records.

One run = one Ray instance with N GPUs (CUDA_VISIBLE_DEVICES narrowed to the first N, and 16 CPUs
per GPU, so 1 and 2 GPUs are compared as 1 and 2 shares of the machine) running `run_sweep` over a
fixed list of trials: every combination of r in {8, 16} x attention / all-linear+lm_head x 4 / 8
bits, biggest first, a fixed number of steps, no early stopping. Ray places the trials with the
GPU fraction the memory estimator gives (`--gpu-share auto`), or that fraction raised so the trials
spread over all GPUs (`spread`), or a forced number. Meanwhile `nvidia-smi -lms 500` runs in a
background process. The JSON holds trials/hour, which GPU each trial ran on and when (Ray's
result.json: `gpu_ids`, `wall_time`, `time_total_s`), per-GPU busy time and idle gaps, and the
utilisation samples; the PNG plots utilisation, memory and the trials per GPU against time.

    python -m benchmarks.scaling --gpus 2 --trials 8 --steps 10 --out $OUT --tag 2gpu
    python -m benchmarks.scaling --gpus 2 --fake-gpus --model tiny --data sample ...   # CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_STUDY = ROOT / "examples" / "seed-study.yaml"
QUERY = ["--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "500"]
CPUS_PER_GPU = 16
# The seed study's 8 points, longest first (8-bit all-linear is ~3x slower than 4-bit attention):
# with more trials than slots, the short ones fill the gaps at the end.
POINTS = [
    {"lora.r": r, "lora.target_modules": t, "quantization.bits": b}
    for b in (8, 4)
    for t in ("all-linear+lm_head", "attention")
    for r in (16, 8)
]
ONLY = {
    "all": POINTS,
    "attn-r8-4bit": [
        p
        for p in POINTS
        if p["lora.r"] == 8 and p["lora.target_modules"] == "attention" and p["quantization.bits"] == 4
    ],
}


class UtilPoller:
    """`nvidia-smi -lms 500` in a background process; each line is stamped with time.time() on arrival."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, float, float]] = []  # (t, gpu index, util %, memory MiB)
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> UtilPoller:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            print("no nvidia-smi on PATH: no utilisation samples", flush=True)
            return self
        self.proc = subprocess.Popen(
            [exe, *QUERY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((time.time(), int(parts[0]), float(parts[1]), float(parts[2])))
            except (ValueError, IndexError):  # "[N/A]" or a partial line: not a sample
                continue

    def stop(self) -> list[tuple[float, int, float, float]]:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            if self.thread is not None:
                self.thread.join(timeout=10)
        return self.samples


def gpu_inventory() -> list[dict]:
    """Index, name and memory of each GPU nvidia-smi sees (empty without a driver)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    out = subprocess.run(
        [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    rows = [[p.strip() for p in line.split(",")] for line in out.splitlines() if line.count(",") == 2]
    return [{"index": int(i), "name": n, "memory_mib": float(m)} for i, n, m in rows]


def sweep_config(args: argparse.Namespace, points: list[dict], storage: Path, gpu_memory_gb: float):
    """The seed study's YAML with what a timing run needs: fixed steps, no early stopping, no judge."""
    from sweep.config import SweepConfig, check_space
    from trainables.config import apply_overrides, read_yaml, validate

    data = read_yaml(SEED_STUDY)
    # A training seed per trial: repeats of a point are distinct configs (the sweep never trains one twice).
    points = [{**points[i % len(points)], "training.seed": i} for i in range(args.trials)]
    data["search"].update(
        num_samples=args.trials,
        max_concurrent_trials=args.trials,
        scheduler={"type": "none"},
        initial_points=points,
    )
    data["search"]["space"] = {k: {"choice": sorted({p[k] for p in points}, key=str)} for k in points[0]}
    data.update(name=args.tag, storage_path=str(storage), max_failures=0)
    data["resources"] = {"cpu": args.cpus_per_trial, "gpu": "auto", "gpu_memory_gb": gpu_memory_gb}
    data["tracking"] = {"tracking_uri": f"sqlite:///{storage / 'mlflow.db'}", "register_best": False}
    sets = [
        f"model.path={args.model_path}",
        f"data.source={args.data}",
        f"training.max_steps={args.steps}",
        f"training.eval_interval={args.steps}",
        "training.eval_batches=1",
        f"training.compile={args.compile}",
        "generation.num_prompts=0",
        "judge.backend=none",
        *args.set,
    ]
    cfg = validate(SweepConfig, apply_overrides(data, sets))
    check_space(cfg)
    return cfg


def choose_share(cfg, gpus: int, trials: int, mode: str) -> dict:
    """The estimator's fraction (`auto`), that fraction raised to spread the trials over every GPU
    (`spread`: Ray best-fits fractions, so 1/7 each would put 7 of 8 trials on the first GPU), or a number."""
    from sweep.placement import auto_gpu_share

    auto = auto_gpu_share(cfg)
    spread = max(auto, min(1.0, gpus / trials))
    share = {"auto": auto, "spread": spread}.get(mode)
    return {
        "estimator_share": auto,
        "spread_share": spread,
        "mode": mode,
        "share": float(mode) if share is None else share,
    }


def prewarm_data(cfg) -> None:
    """Tokenize once in the driver: every trial on this node then reads the cache (as a sweep should)."""
    from trainables.data import prepare_data
    from trainables.model import load_tokenizer

    prepare_data(cfg.data, load_tokenizer(cfg.model), cfg.training.max_seq_len)


def trial_records(experiment: Path) -> list[dict]:
    """One row per trial from Ray Tune's own files (params.json, result.json, error.txt)."""
    rows = []
    for d in sorted(p for p in experiment.iterdir() if (p / "params.json").is_file()):
        params = json.loads((d / "params.json").read_text())
        results = (
            [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()]
            if (d / "result.json").is_file()
            else []
        )
        m = re.search(r"_([0-9a-f]{5,})_(\d+)_", d.name)
        row = {
            "trial": f"{m.group(1)}_{int(m.group(2)):05d}" if m else d.name[:24],
            "params": params,
            "error": (d / "error.txt").read_text()[-300:] if (d / "error.txt").is_file() else None,
        }
        if results:
            last = results[-1]
            # wall_time: time.time() at the trial's report; time_total_s: Ray's clock since the trial started.
            row.update(
                gpu_ids=str(last.get("gpu_ids", "")),
                node_id=last.get("node_id"),
                pid=last.get("pid"),
                start=last["wall_time"] - last["time_total_s"],
                end=last["wall_time"],
                time_total_s=last["time_total_s"],
                train_s=last.get("elapsed_s"),
                tokens_per_s=last.get("tokens_per_s"),
                peak_mem_gb=last.get("peak_mem_gb"),
                step=last.get("step"),
                total_steps=last.get("total_steps"),
                eval_loss=last.get("eval_loss"),
                trial_id=last.get("trial_id"),
            )
        rows.append(row)
    return rows


def actor_times() -> dict[int, dict]:
    """pid -> when Ray created the trial's actor (it then holds its CPU/GPU share) and when the actor was
    ready (process up, modules imported), from Ray's state API. Empty if the API does not answer."""
    try:
        import ray
        from ray.util.state import list_actors, list_tasks

        addr = ray.get_runtime_context().gcs_address  # this sweep's instance, even with others on the host

        pids = {
            a["actor_id"]: a["pid"]
            for a in map(_as_dict, list_actors(address=addr, detail=True, limit=10000))
            if a.get("pid")
        }
        out = {}
        for t in map(
            _as_dict,
            list_tasks(
                address=addr, filters=[("type", "=", "ACTOR_CREATION_TASK")], detail=True, limit=10000
            ),
        ):
            if t.get("actor_id") in pids and t.get("creation_time_ms"):
                done = [e["created_ms"] for e in t.get("events") or [] if e.get("state") == "FINISHED"]
                out[pids[t["actor_id"]]] = {
                    "created": t["creation_time_ms"] / 1000,
                    "ready": done[0] / 1000 if done else None,
                }
        return out
    except Exception as err:  # noqa: BLE001 - the timing falls back to Ray's time_total_s
        print(f"state API unavailable ({err}); trial starts from time_total_s", flush=True)
        return {}


def _as_dict(x) -> dict:  # noqa: ANN001 - the state API returns dataclasses or dicts by version
    return x if isinstance(x, dict) else dict(x.__dict__)


def with_actor_times(records: list[dict], actors: dict[int, dict]) -> list[dict]:
    """A trial starts when Ray created its actor (resources granted), not when its function began."""
    for r in records:
        a = actors.get(r.get("pid"))
        if a and "start" in r:
            r["function_start"] = r["start"]
            r["start"], r["actor_ready"] = a["created"], a["ready"]
            r["start_source"] = "ray state API: actor creation task"
        elif "start" in r:
            r["start_source"] = "ray result.json: wall_time - time_total_s"
    return records


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def gpu_timeline(records: list[dict], t0: float, t1: float) -> dict:
    """Per GPU: time with at least one trial, and the idle gaps inside the sweep's window
    (head: before its first trial; between: while trials were still to come; tail: after its last)."""
    per: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if "start" in r:
            for g in (r["gpu_ids"] or "none").split(","):
                per.setdefault(g, []).append((r["start"], r["end"]))
    out = {}
    for g, spans in sorted(per.items()):
        busy = _union(spans)
        edges = [t0] + [x for ab in busy for x in ab] + [t1]
        gaps = []
        for k in range(0, len(edges), 2):
            a, b = edges[k], edges[k + 1]
            if b - a > 0.5:
                kind = "head" if k == 0 else ("tail" if k == len(edges) - 2 else "between")
                gaps.append(
                    {"kind": kind, "from_s": round(a - t0, 1), "to_s": round(b - t0, 1), "s": round(b - a, 1)}
                )
        out[g] = {
            "trials": len(spans),
            "busy_s": round(sum(b - a for a, b in busy), 1),
            "max_concurrent": _max_overlap(spans),
            "idle_gaps": gaps,
        }
    return out


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def util_summary(samples: list, t0: float, t1: float) -> dict:
    """Per GPU over [t0, t1]: mean utilisation, share of samples at 0 %, peak memory used."""
    out: dict[str, dict] = {}
    for g in sorted({s[1] for s in samples}):
        xs = [s for s in samples if s[1] == g and t0 <= s[0] <= t1]
        if xs:
            out[str(g)] = {
                "samples": len(xs),
                "mean_util_pct": round(sum(s[2] for s in xs) / len(xs), 1),
                "zero_util_frac": round(sum(s[2] == 0 for s in xs) / len(xs), 3),
                "max_mem_used_gib": round(max(s[3] for s in xs) / 1024, 2),
            }
    return out


def short(params: dict) -> str:
    t = "all" if str(params.get("lora.target_modules", "")).startswith("all") else "attn"
    return f"r{params.get('lora.r')}-{t}-{params.get('quantization.bits')}b"


def plot(samples: list, records: list[dict], t0: float, path: Path, title: str) -> None:
    """Utilisation and memory per GPU against time, and each trial's span on its GPU (Ray's records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8), sharex=True, height_ratios=[2, 1.3, 2])
    for g in sorted({s[1] for s in samples}):
        xs = [s for s in samples if s[1] == g]
        ax1.plot([s[0] - t0 for s in xs], [s[2] for s in xs], label=f"GPU {g}", lw=1)
        ax2.plot([s[0] - t0 for s in xs], [s[3] / 1024 for s in xs], label=f"GPU {g}", lw=1)
    ax1.set_ylabel("utilisation %")
    ax1.set_ylim(-2, 102)
    ax2.set_ylabel("memory used GiB")
    for ax in (ax1, ax2):
        if samples:
            ax.legend(loc="upper right", fontsize=8)
    done = sorted((r for r in records if "start" in r), key=lambda r: (r["gpu_ids"], r["start"]))
    for y, r in enumerate(done):
        ax3.barh(
            y, r["end"] - r["start"], left=r["start"] - t0, color=f"C{int((r['gpu_ids'] or '0')[0]) % 10}"
        )
        ax3.text(
            r["start"] - t0,
            y,
            f" {r['trial']} {short(r['params'])} GPU {r['gpu_ids']}",
            va="center",
            fontsize=7,
        )
    ax3.set_yticks([])
    ax3.set_ylabel("trials (Ray records)")
    ax3.set_xlabel("seconds since the sweep started")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work) / args.tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inventory = gpu_inventory()
    if not args.fake_gpus:
        if len(inventory) < args.gpus:
            raise SystemExit(
                f"--gpus {args.gpus}: nvidia-smi sees {len(inventory)} (use --fake-gpus on the CPU)"
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(args.gpus))
    mem_gb = args.gpu_memory_gb or (inventory[0]["memory_mib"] / 1024 if inventory else 80.0)
    cfg = sweep_config(args, ONLY[args.only], work, mem_gb)
    share = choose_share(cfg, args.gpus, args.trials, args.gpu_share)
    cfg.resources.gpu = share["share"]
    prewarm_data(cfg)
    meta = {
        "tag": args.tag,
        "gpus": args.gpus,
        "fake_gpus": args.fake_gpus,
        "trials": args.trials,
        "steps": args.steps,
        "only": args.only,
        "compile": args.compile,
        "cpus": args.cpus_per_gpu * args.gpus,
        "cpus_per_trial": args.cpus_per_trial,
        "gpu_memory_gb": mem_gb,
        "gpu_inventory": inventory,
        **share,
    }

    import ray

    from sweep.runner import run_sweep

    # The dashboard stays on (Ray Train V2 uses its state API); fake GPUs on the CPU run the same path.
    ray.init(num_cpus=args.cpus_per_gpu * args.gpus, num_gpus=args.gpus, log_to_driver=args.verbose)
    poller = UtilPoller().start()
    t0 = time.time()
    if args.deadline_s:
        threading.Thread(target=_deadline, args=(args, meta, work, t0, poller), daemon=True).start()
    outcome = run_sweep(cfg)
    meta.update(finished=outcome.finished, failed=outcome.failed, errors=outcome.errors, interrupted=False)
    t1 = time.time()
    samples = poller.stop()
    actors = actor_times()
    ray.shutdown()
    return report(args, meta, work, t0, t1, samples, actors)


def _deadline(args: argparse.Namespace, meta: dict, work: Path, t0: float, poller: UtilPoller) -> None:
    """At --deadline-s: write what Ray has recorded so far (finished trials count), stop Ray, exit.
    A sweep cut short this way still yields a rate: completed trials over the time they took."""
    time.sleep(max(0.0, t0 + args.deadline_s - time.time()))
    print(f"deadline {args.deadline_s}s reached: writing the partial result and stopping Ray", flush=True)
    t1 = time.time()
    samples = poller.stop()
    try:
        report(args, {**meta, "interrupted": True}, work, t0, t1, samples, actor_times())
    finally:
        import ray

        ray.shutdown()
        os._exit(3)


def report(args, meta: dict, work: Path, t0: float, t1: float, samples: list, actors: dict) -> dict:  # noqa: ANN001
    """The JSON (trials/hour, Ray's per-trial records, per-GPU busy time and gaps, utilisation) and PNG."""
    records = with_actor_times(trial_records(work / args.tag), actors)
    done = [r for r in records if r.get("step") and r.get("step") == r.get("total_steps")]
    spans = [r for r in records if "start" in r]
    first = min((r["start"] for r in spans), default=t0)
    last = max((r["end"] for r in spans), default=t1)
    result = {
        **meta,
        "completed": len(done),
        "sweep_wall_s": round(t1 - t0, 1),
        "records_span_s": round(last - first, 1),
        "trials_per_hour": round(3600 * len(done) / (t1 - t0), 1),
        "trials_per_hour_records": round(3600 * len(done) / max(last - first, 1e-9), 1),
        "per_gpu": gpu_timeline(records, t0, t1),
        "utilisation": util_summary(samples, t0, t1),
        "trials_table": [
            {
                k: (round(v - t0, 1) if k in ("start", "end", "function_start", "actor_ready") and v else v)
                for k, v in r.items()
            }
            for r in sorted(records, key=lambda r: r.get("start", 0))
        ],
        "t0": t0,
        "util_samples": [(round(s[0] - t0, 2), s[1], s[2], s[3]) for s in samples],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.tag}.json").write_text(json.dumps(result, indent=1, default=str))
    if not args.no_plot:
        title = (
            f"{args.tag}: {len(done)}/{args.trials} trials x {args.steps} steps on {args.gpus} GPU(s), "
            f"share {meta['share']:.3f}, {result['trials_per_hour']} trials/h"
            + (" (cut at the deadline)" if meta.get("interrupted") else "")
        )
        plot(samples, records, t0, out / f"{args.tag}.png", title)
    print(table(result), flush=True)
    return result


def table(result: dict) -> str:
    lines = [
        f"== {result['tag']}: {result['completed']}/{result['trials']} trials completed on {result['gpus']} GPU(s), "
        f"share {result['share']:.3f} (estimator {result['estimator_share']:.3f}), sweep {result['sweep_wall_s']} s, "
        f"{result['trials_per_hour']} trials/h ({result['trials_per_hour_records']} from Ray's first start to last end)",
        "| trial | config | GPU | start s | actor ready s | end s | Ray total s | train s | tokens/s | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["trials_table"]:
        if "start" not in r:
            lines.append(
                f"| {r['trial']} | {short(r['params'])} | | | | | | | "
                + (f"failed: {r['error'][-80:]!r} | |" if r["error"] else "not finished | |")
            )
            continue
        lines.append(
            f"| {r['trial']} | {short(r['params'])} | {r['gpu_ids']} | {r['start']} | {r.get('actor_ready')} | {r['end']} | "
            f"{r['time_total_s']:.1f} | {r['train_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_mem_gb']:.1f} |"
        )
    for g, v in result["per_gpu"].items():
        lines.append(
            f"GPU {g}: {v['trials']} trials, busy {v['busy_s']} s, max {v['max_concurrent']} at once, "
            f"idle gaps {v['idle_gaps']}; utilisation {result['utilisation'].get(g, {})}"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tag", default=None, help="names the JSON/PNG and the experiment (default: <gpus>gpu)")
    p.add_argument("--out", default="benchmarks/runs/scaling")
    p.add_argument(
        "--work", default="/tmp/qlora-scaling", help="Ray's experiment directories (many small files)"
    )
    p.add_argument(
        "--model",
        default="bench",
        help="'bench' = the OpenLLaMA-3b-v2-shaped dir of benchmarks.common, or a path/built-in",
    )
    p.add_argument(
        "--data", default=None, help="default: benchmarks.common's data for 'bench', else 'sample'"
    )
    p.add_argument("--root", default=None, help="benchmarks.common's directory (QLORA_BENCH_DIR)")
    p.add_argument("--only", choices=sorted(ONLY), default="all")
    p.add_argument("--gpu-share", default="spread", help="auto | spread | a number")
    p.add_argument("--gpu-memory-gb", type=float, default=None)
    p.add_argument("--cpus-per-gpu", type=int, default=CPUS_PER_GPU)
    p.add_argument("--cpus-per-trial", type=float, default=2)
    p.add_argument("--compile", choices=("true", "false"), default="false")
    p.add_argument(
        "--fake-gpus", action="store_true", help="Ray's num_gpus=N with no CUDA: trials run on the CPU"
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--deadline-s", type=float, default=None, help="write what finished and stop Ray after this long"
    )
    p.add_argument("--verbose", action="store_true", help="trial output on the driver's console")
    p.add_argument("--set", action="append", default=[], help="extra config overrides (key=value)")
    args = p.parse_args(argv)
    args.tag = args.tag or f"{args.gpus}gpu"
    if args.model == "bench":
        from benchmarks import common

        root = Path(args.root) if args.root else common.ROOT
        args.model_path, args.data = str(common.model_dir(root)), args.data or str(common.data_path(root))
    else:
        args.model_path, args.data = args.model, args.data or "sample"
    return args


def main(argv: list[str] | None = None) -> None:
    run(parse(argv))


if __name__ == "__main__":
    main()
