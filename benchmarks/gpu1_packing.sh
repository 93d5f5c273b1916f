#!/usr/bin/env bash
# Issue 12's packing figure, in one single-GPU device call (nvidia-h100-x1 or nvidia-h200): the same
# attention-only r=8 4-bit trials of the seed study, a fixed number of steps, no early stopping, run
# packed (several trials share the GPU: --gpu-share SHARE) and one at a time (--gpu-share 1), timed
# by benchmarks.scaling from Ray's records. Packed runs first: if the budget runs out, the one-at-a-time
# phase is the one cut, and its rate is still taken from the trials it completed (see the summary).
# Carried: .gpu-wheels/, .scale-wheels/ (as for gpu2.sh) and .dash-wheels/. Before the two phases,
# one 2-step trial through Ray warms the page cache, Python's imports and flex_attention's inductor
# cache, so that neither phase pays for a cold start the other does not.
# Files under $OUT: gpu1.log, warm.json, packed.json/png, one.json/png, summary.json.
# usage: OUT=dir bash benchmarks/gpu1_packing.sh [BUDGET_S=390] [TRIALS=6] [STEPS=8] [SHARE=0.3333]
#        FAKE=1 ...: CPU check (tiny model, fake GPUs)
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET=${1:-390}
TRIALS=${2:-6}
STEPS=${3:-8}
SHARE=${4:-0.3333}
OUT=${OUT:-benchmarks/runs/gpu1}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu1.log") 2>&1
source benchmarks/device_env.sh
left() { echo $((T0 + BUDGET - $(date +%s))); }
phase() { # phase CAP_S RESERVE_S command... : deadline = min(CAP, time left - RESERVE)
  local cap=$1 reserve=$2
  shift 2
  local t=$(($(left) - reserve))
  ((cap < t)) && t=$cap
  if ((t < 30)); then
    echo "== SKIPPED (only $(left)s left): $*"
    return
  fi
  echo "== $(date -u +%T) phase, deadline ${t}s: $*"
  timeout -k 10 $((t + 25)) "$@" --deadline-s "$t"
  echo "== exit $? after $(($(date +%s) - T0))s"
  [ -z "${FAKE:-}" ] && python3 -m ray.scripts.scripts stop --force >/dev/null 2>&1 # the device runs only ours
  return 0
}
if [ -n "${FAKE:-}" ]; then
  M=(--model tiny --fake-gpus --cpus-per-gpu 2 --cpus-per-trial 1
    --set data.eval_rows=30 --set training.max_seq_len=256)
else
  # .dash-wheels/ (googleapis-common-protos, protobuf): opencensus, in Ray's dashboard agent, imports
  # google.rpc, which the device image lacks; without it the raylet never registers and ray.init
  # times out (seen on the first call, 2026-11-23).
  pipi /tmp/site .gpu-wheels/*.whl .scale-wheels/*.whl $(ls .dash-wheels/*.whl 2>/dev/null) || exit 1
  export PYTHONPATH=$PWD:/tmp/site
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc
  python3 - <<'PY'
import importlib, datetime
for m in ("torch", "transformers", "peft", "trl", "bitsandbytes", "ray", "optuna", "mlflow", "datasets"):
    print(m, importlib.import_module(m).__version__)
print("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"))
PY
  python3 -c "import google.rpc.code_pb2, ray.dashboard.optional_deps; print('ray dashboard deps ok')" || exit 1
  python3 -m benchmarks.speed prepare || exit 1
  echo "== $(date -u +%T) prepared after $(($(date +%s) - T0))s"
  M=(--verbose)
fi
S=(python3 -m benchmarks.scaling --gpus 1 --only attn-r8-4bit --steps "$STEPS" --out "$OUT" "${M[@]}")
phase 75 200 "${S[@]}" --trials 1 --steps 2 --gpu-share 1 --tag warm --no-plot
phase 130 60 "${S[@]}" --trials "$TRIALS" --gpu-share "$SHARE" --tag packed
phase 400 12 "${S[@]}" --trials "$TRIALS" --gpu-share 1 --tag one
python3 - "$OUT" <<'PY'
import datetime, json, pathlib, sys

out = pathlib.Path(sys.argv[1])
r = {t: json.loads((out / f"{t}.json").read_text()) for t in ("packed", "one")
     if (out / f"{t}.json").is_file()}
summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}
print("\n== SUMMARY")
for tag, x in r.items():
    done = [t for t in x["trials_table"] if t.get("step") and t.get("step") == t.get("total_steps")]
    # Trials completed over the span from the first start to the last end among them: comparable
    # between a phase that ran to the end and one cut at its deadline (whose wall clock includes
    # a trial that never finished).
    span = max((t["end"] for t in done), default=0) - min((t["start"] for t in done), default=0)
    s = {
        "share": x["share"],
        "estimator_share": x["estimator_share"],
        "completed": x["completed"],
        "trials": x["trials"],
        "interrupted": x.get("interrupted"),
        "sweep_wall_s": x["sweep_wall_s"],
        "trials_per_hour_wall": x["trials_per_hour"],
        "trials_per_hour_records": x["trials_per_hour_records"],
        "completed_span_s": round(span, 1),
        "trials_per_hour_completed_span": round(3600 * len(done) / span, 1) if span > 0 else None,
        "per_gpu": x["per_gpu"],
        "utilisation": x["utilisation"],
    }
    summary[tag] = s
    print(f"{tag}: {s['completed']}/{s['trials']} done, share {s['share']:.3f} (estimator "
          f"{s['estimator_share']:.3f}), wall {s['sweep_wall_s']} s -> {s['trials_per_hour_wall']} trials/h; "
          f"completed span {s['completed_span_s']} s -> {s['trials_per_hour_completed_span']} trials/h; "
          f"cut={s['interrupted']}; util {s['utilisation']}")
if len(r) == 2:
    for k in ("trials_per_hour_wall", "trials_per_hour_records", "trials_per_hour_completed_span"):
        a, b = summary["packed"][k], summary["one"][k]
        summary[f"ratio_{k}"] = round(a / b, 2) if a and b else None
        print(f"packed / one at a time, {k}: {summary[f'ratio_{k}']}x (target >= 1.5x)")
(out / "summary.json").write_text(json.dumps(summary, indent=1))
PY
echo "== total $(($(date +%s) - T0))s"
