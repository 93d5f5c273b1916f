#!/usr/bin/env bash
# The one device call of issues 12 and 15 (nvidia-h200-x2). Carried: .gpu-wheels/ (the sweep's stack,
# Ray included, slimmed by ../shared/tools/gpu-wheels) and .scale-wheels/ (Ray's dashboard modules:
# Ray Train V2 uses the state API; with googleapis-common-protos, google-api-core and proto-plus, since
# opencensus imports google.rpc and without it Ray does not start). Builds the OpenLLaMA-3b-v2-shaped random model (benchmarks.common),
# warms the page and compile caches with one short trial, then runs, most important first, each phase
# bounded by what is left of BUDGET seconds (a phase cut short still writes what finished):
#   1gpu / 2gpu  benchmarks.scaling: the same 8 seed-study trials on 1 GPU, then on 2 GPUs
#   ddp          benchmarks.ddp: tokens/s of one trial on 1 worker vs 2 Ray Train workers
#   pack1/packN  benchmarks.scaling: attention r=8 4-bit trials one per GPU vs packed, on 1 GPU
# usage: OUT=dir [PHASES='ddp 2gpu ...'] bash benchmarks/gpu2.sh [BUDGET_S=430] [STEPS=8]   (FAKE=1: CPU check, tiny model)
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET=${1:-430}
STEPS=${2:-8}
OUT=${OUT:-benchmarks/runs/gpu2}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu2.log") 2>&1
source benchmarks/device_env.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # KINDS.md: keep these
left() { echo $((T0 + BUDGET - $(date +%s))); }
phase() {  # phase CAP_S command... : run with min(CAP, time left - 15 s) as its deadline
  local cap=$1
  shift
  local t=$(($(left) - 15))
  ((cap < t)) && t=$cap
  if ((t < 40)); then
    echo "== SKIPPED (only $(left)s left): $*"
    return
  fi
  echo "== $(date -u +%T) phase, deadline ${t}s: $*"
  timeout -k 10 $((t + 20)) "$@" --deadline-s "$t"
  echo "== exit $? after $(($(date +%s) - T0))s"
  [ -z "${FAKE:-}" ] && python3 -m ray.scripts.scripts stop --force >/dev/null 2>&1  # the device runs only ours
  return 0
}
if [ -n "${FAKE:-}" ]; then
  M=(--model tiny --fake-gpus --cpus-per-gpu 2 --cpus-per-trial 1 --set data.eval_rows=30 --set training.max_seq_len=256)
  D=(--model tiny --fake-gpus --gpu 0 --cpus-per-worker 1 --batch-size 4 --grad-accum 1 --set data.eval_rows=30)
else
  pipi /tmp/site --upgrade .gpu-wheels/*.whl .scale-wheels/*.whl || exit 1  # --upgrade: a warm machine's /tmp/site takes new files
  export PYTHONPATH=$PWD:/tmp/site
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc
  python3 -c "import ray.dashboard.optional_deps; print('ray dashboard deps ok')"
  python3 - <<'PY'
import importlib, datetime
for m in ("torch", "transformers", "peft", "trl", "bitsandbytes", "ray", "optuna", "mlflow", "datasets"):
    print(m, importlib.import_module(m).__version__)
print("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"))
PY
  python3 -m benchmarks.speed prepare || exit 1
  echo "== $(date -u +%T) prepared after $(($(date +%s) - T0))s"
  # One short trial outside Ray: the weights enter the page cache, flex_attention's kernels the
  # inductor cache, so the first sweep does not pay for what the second reuses.
  timeout 120 python3 -m benchmarks.speed ours --name warm --out /tmp/warm --window 1 \
    --set lora.target_modules=attention --set training.batch_size=4 --set training.grad_accum=4 \
    --set training.compile=false --set generation.num_prompts=0 | grep -E "report|row" | cut -c1-300
  echo "== $(date -u +%T) warm after $(($(date +%s) - T0))s"
  M=(--verbose)
  D=()
fi
S=(python3 -m benchmarks.scaling --trials 8 --steps "$STEPS" --out "$OUT" "${M[@]}")
P=(python3 -m benchmarks.scaling --gpus 1 --only attn-r8-4bit --trials 4 --steps "$STEPS" --out "$OUT" --no-plot "${M[@]}")
for ph in ${PHASES:-1gpu 2gpu ddp packN pack1}; do  # PHASES: which, in what order
  case $ph in
    1gpu) phase 150 "${S[@]}" --gpus 1 --tag 1gpu ;;
    2gpu) phase 120 "${S[@]}" --gpus 2 --tag 2gpu ;;
    ddp) phase 120 python3 -m benchmarks.ddp --workers 1,2 --steps 12 --out "$OUT" "${D[@]}" ${DDP_ARGS:-} ;;
    packN) phase 60 "${P[@]}" --gpu-share auto --tag packN ;;
    pack1) phase 120 "${P[@]}" --gpu-share 1 --tag pack1 ;;
  esac
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
r = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
print("\n== SUMMARY")
for tag in ("1gpu", "2gpu", "packN", "pack1"):
    if tag in r:
        x = r[tag]
        print(f"{tag}: {x['completed']}/{x['trials']} done in {x['sweep_wall_s']}s, share {x['share']:.3f}, "
              f"{x['trials_per_hour']} trials/h ({x['trials_per_hour_records']} by Ray's records), cut={x.get('interrupted')}")
        for g, v in x["per_gpu"].items():
            print(f"  GPU {g}: {v['trials']} trials, busy {v['busy_s']}s, max {v['max_concurrent']} at once, "
                  f"gaps {[(q['kind'], q['s']) for q in v['idle_gaps']]}; util {x['utilisation'].get(g)}")
for a, b in (("2gpu", "1gpu"), ("packN", "pack1")):
    if a in r and b in r and r[b]["trials_per_hour"]:
        print(f"{a} / {b} trials/h: {r[a]['trials_per_hour'] / r[b]['trials_per_hour']:.2f}x "
              f"(records: {r[a]['trials_per_hour_records'] / max(r[b]['trials_per_hour_records'], 1e-9):.2f}x)")
if "ddp" in r:
    for run in r["ddp"]["runs"]:
        print("ddp", {k: run.get(k) for k in ("workers", "tokens_per_s", "tokens_per_s_whole_run", "step_s",
                                               "peak_mem_gb", "errors")},
              {g: v["max_mem_used_gib"] for g, v in run["per_gpu"].items()})
    print("ddp speedup", r["ddp"].get("speedup_2_vs_1"))
PY
echo "== total $(($(date +%s) - T0))s"
