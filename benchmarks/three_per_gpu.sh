#!/usr/bin/env bash
# Issue 14's "three trials fit on one 80 GB GPU", shown by a real sweep rather than by arithmetic:
# `qlora-sweep run benchmarks/three_per_gpu.yaml` (Ray Tune, 3 trials at once, GPU share from the
# estimator) on the lent GPU, with nvidia-smi sampling the whole GPU's used memory meanwhile. Carry
# .gpu-wheels (../shared/tools/gpu-wheels). Writes plan.txt, run.log, gpu-mem.csv, trials.json to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
[ -d /tmp/gsite/ray ] || pipi /tmp/gsite .gpu-wheels/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/gsite
python3 -c "from benchmarks import common; print(common.prepare())" || exit 1
nvidia-smi --query-gpu=timestamp,memory.used,memory.total --format=csv,noheader,nounits -lms 500 >"$OUT/gpu-mem.csv" &
mon=$!
python3 -m sweep.cli plan benchmarks/three_per_gpu.yaml | tee "$OUT/plan.txt"
timeout "${SWEEP_BUDGET_S:-480}" python3 -m sweep.cli run benchmarks/three_per_gpu.yaml >"$OUT/run.log" 2>&1
echo "sweep exit $?"
kill $mon
python3 - "$OUT" <<'PY'
"""Per trial: its GPU share, peak allocated memory, tokens/s and when it trained; the GPU's peak use."""
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
trials = []
for f in sorted(Path("/tmp/three-per-gpu/three-per-gpu").glob("*/result.json")):
    reports = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    if not reports:
        continue
    last = reports[-1]
    start = reports[0]["timestamp"] - reports[0].get("time_this_iter_s", 0)
    trials.append({
        "trial": f.parent.name[:40], "lr": last["config"].get("training.lr"), "steps": last.get("step"),
        "eval_loss": last.get("eval_loss"), "peak_allocated_gb": max(r.get("peak_mem_gb", 0) for r in reports),
        "tokens_per_s": last.get("tokens_per_s"), "first_report_end": reports[0]["timestamp"],
        "last_report": last["timestamp"], "start_est": start,
    })
mem = [line.split(", ") for line in (out / "gpu-mem.csv").read_text().splitlines() if line.count(",") == 2]
used = [int(m[1]) for m in mem if m[1].isdigit()]
summary = {"trials": trials, "gpu_used_peak_mib": max(used, default=None),
           "gpu_total_mib": int(mem[0][2]) if mem else None, "samples": len(used)}
if trials:
    summary["all_training_at_once_s"] = min(t["last_report"] for t in trials) - max(t["first_report_end"] for t in trials)
(out / "trials.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
tail -n 40 "$OUT/run.log"
