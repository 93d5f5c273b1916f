"""Issue 22's sweep benchmark: a whole sweep's effective training rate against one trial's steady rate.

In one process tree on one GPU: (1) one trial alone (`run_trial`, all-linear r=8 4-bit, the sweep's
length) for its steady tokens/s, compiled and as `compile: auto` decides; (2) `qlora-sweep run` of
benchmarks/sweep_e2e.yaml, with nvidia-smi sampling utilisation. Prints and writes (to --out):
sweep wall, effective tokens/s (all trials' tokens / wall), the ratio to the single trial's steady
rate, mean GPU utilisation, and the per-phase table of every trial (first on its worker or reused).

    python -m benchmarks.sweep_bench --out DIR [--sweep-sets training.compile=true ...] [--skip-single]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import prepare
from benchmarks.scaling import UtilPoller, util_summary
from trainables.phases import PHASES

YAML = Path(__file__).with_name("sweep_e2e.yaml")
SINGLE = [
    "lora.r=8",
    "lora.target_modules=all-linear",
    "quantization.bits=4",
    "training.max_steps=60",
    "training.eval_interval=30",
    "model.path=/tmp/qlora-bench/model",
    "data.source=/tmp/qlora-bench/data.jsonl",
    "data.eval_rows=100",
]


def single(sets: list[str], out: Path) -> dict:
    """One trial in a fresh process (nothing cached in memory), its final metrics."""
    code = (
        "import json, sys; from trainables.config import load_trial_config; "
        "from trainables.reporting import PrintReporter; from trainables.trial import run_trial; "
        "m = run_trial(load_trial_config(None, sys.argv[2:]), PrintReporter(sys.argv[1])); "
        "print('RESULT', json.dumps({k: v for k, v in m.items() if isinstance(v, (int, float, str, bool))}))"
    )
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code, str(out), *sets], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": proc.stderr[-2000:], "wall_s": time.time() - t0}
    return {**json.loads(lines[-1][7:]), "wall_s": time.time() - t0}


def trial_rows(experiment: Path) -> list[dict]:
    """Each trial's last report (Tune's result.json), in start order."""
    rows = []
    for f in experiment.glob("*/result.json"):
        reports = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        if reports:
            last = reports[-1]
            rows.append(
                {
                    **{k: v for k, v in last.items() if not isinstance(v, dict)},
                    "params": last.get("config", {}),
                    "start": last["wall_time"] - last["time_total_s"],
                }
            )
    return sorted(rows, key=lambda r: r["start"])


def sweep(sets: list[str], storage: Path) -> dict:
    poller = UtilPoller().start()
    t0 = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sweep.cli",
            "run",
            str(YAML),
            "--set",
            f"storage_path={storage}",
            *[a for s in sets for a in ("--set", s)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []  # (seconds since start, line): when the summary came, so the process's exit shows apart
    for line in proc.stdout:
        lines.append((time.time() - t0, line))
    proc.wait()
    t1 = time.time()
    summary_at = next((t for t, ln in lines if ln.startswith("=== sweep")), None)
    samples = poller.stop()
    rows = trial_rows(storage / "e2e")
    tokens = sum(r.get("tokens", 0) for r in rows)
    span = (max(r["wall_time"] for r in rows) - min(r["start"] for r in rows)) if rows else None
    return {
        "sets": sets,
        "exit": proc.returncode,
        "process_wall_s": t1 - t0,
        "trials_span_s": span,
        "trials": len(rows),
        "tokens": tokens,
        "util": util_summary(samples, t0, t1),
        "effective_tokens_per_s_process": tokens / (t1 - t0),
        "effective_tokens_per_s_span": tokens / span if span else None,
        "rows": rows,
        "first_output_s": lines[0][0] if lines else None,
        "summary_at_s": summary_at,
        "exit_after_summary_s": (t1 - t0 - summary_at) if summary_at else None,
        "log_tail": "".join(ln for _, ln in lines)[-3000:],
        "console": "".join(ln for _, ln in lines),
    }


def phase_table(rows: list[dict]) -> str:
    cols = (
        ["trial", "r", "targets", "reused", "compiled"]
        + [p for p in PHASES]
        + ["fixed", "total", "train tok/s", "compile stages"]
    )
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        p = r["params"]
        lines.append(
            " | ".join(
                str(x)
                for x in [
                    r.get("trial_id", "?"),
                    p.get("lora.r"),
                    p.get("lora.target_modules"),
                    r.get("base_reused"),
                    r.get("compiled"),
                    *[f"{r.get(f'phase_{ph}_s', 0):.1f}" for ph in PHASES],
                    f"{r.get('fixed_s', 0):.1f}",
                    f"{r.get('trial_wall_s', 0):.1f}",
                    f"{r.get('train_tokens_per_s', 0):,.0f}",
                    r.get("compile_stages", ""),
                ]
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--phases-only", type=Path, help="print the phase table of an experiment dir and stop")
    ap.add_argument(
        "--sweep-sets",
        nargs="*",
        default=[],
        help="--set overrides for the sweep, e.g. training.compile=true",
    )
    ap.add_argument(
        "--single-sets",
        nargs="*",
        default=["training.compile=true"],
        help="one alone per value: ';'-separated overrides, e.g. 'training.compile=true'",
    )
    ap.add_argument("--skip-single", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true", help="the single trial(s) alone")
    args = ap.parse_args(argv)
    if args.phases_only:
        print(phase_table(trial_rows(args.phases_only)))
        return
    if args.out is None:
        ap.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(prepare()), flush=True)
    result: dict = {"single": {}}
    if not args.skip_single:
        for spec in args.single_sets:
            extra = [s for s in spec.split(";") if s]
            r = single(SINGLE + extra, Path("/tmp/single") / spec.replace("=", "-").replace(";", "_"))
            result["single"][spec] = r
            print(
                f"single {spec}: steady {r.get('train_tokens_per_s', 0):,.0f} tok/s, wall {r['wall_s']:.0f}s, "
                f"fixed {r.get('fixed_s', 0):.1f}s, compiled {r.get('compiled')} ({r.get('compile_reason')})",
                flush=True,
            )
    if args.skip_sweep:
        (args.out / "sweep_bench.json").write_text(json.dumps(result, indent=1, default=str))
        return
    s = sweep(args.sweep_sets, Path("/tmp/e2e-" + str(int(time.time()))))
    result["sweep"] = s
    (args.out / "sweep_bench.json").write_text(json.dumps(result, indent=1, default=str))
    steady = max((r.get("train_tokens_per_s", 0) for r in result["single"].values()), default=0)
    util = next(iter(s["util"].values()), {}).get("mean_util_pct")
    print(
        f"\nsweep {s['sets']}: exit {s['exit']}, {s['trials']} trials, {s['tokens']:,} tokens; wall {s['process_wall_s']:.0f}s "
        f"(process), {s['trials_span_s'] or 0:.0f}s (first trial start -> last report)"
    )
    shares = (  # of one trial's steady rate, which a run with --skip-single did not measure
        f"one trial steady {steady:,.0f}: {100 * s['effective_tokens_per_s_process'] / steady:.0f}% / "
        f"{100 * (s['effective_tokens_per_s_span'] or 0) / steady:.0f}%"
        if steady
        else "no single run in this call (--skip-single)"
    )
    print(
        f"effective tokens/s: {s['effective_tokens_per_s_process']:,.0f} (process wall), "
        f"{s['effective_tokens_per_s_span'] or 0:,.0f} (trials' span); {shares}; mean GPU util {util}%"
    )
    print(
        f"first output at {s['first_output_s'] or 0:.1f}s, summary at {s['summary_at_s'] or 0:.1f}s, "
        f"exit {s['exit_after_summary_s'] or 0:.1f}s after it"
    )
    table = phase_table(s["rows"])
    (args.out / "phases.md").write_text(table + "\n")
    print(table)
    if s["exit"]:
        print(s["log_tail"])


if __name__ == "__main__":
    main()
