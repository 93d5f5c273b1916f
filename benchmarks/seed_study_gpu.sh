#!/usr/bin/env bash
# Issue 30's "seed study in 10 minutes" on the lent GPU: examples/seed-study.yaml's space and schedule on
# the OpenLLaMA-3b-v2 shape (random weights) with benchmarks.common's 5,000 rows, defaults otherwise.
# Carry .gpu-wheels. The YAML's local judge needs the SmolLM2 files on the machine (benchmarks/smollm2_gpu.sh
# arranges them over calls); without them pass JUDGE=none and say so with the figures.
#   JUDGE=none bash benchmarks/seed_study_gpu.sh [extra --set args]     results under $OUT/seed-study
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
[ -d /tmp/gsite/ray ] || pipi /tmp/gsite .gpu-wheels/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/gsite
python3 -c "import json; from benchmarks.common import prepare; print(json.dumps(prepare()))"
out="$OUT/seed-study"; mkdir -p "$out"
sets=(--set storage_path=/tmp/seed-study --set model.path=/tmp/qlora-bench/model
      --set data.source=/tmp/qlora-bench/data.jsonl)
[ "${JUDGE:-local}" = none ] && sets+=(--set judge.backend=none)
python3 -m sweep.cli plan examples/seed-study.yaml "${sets[@]}" "$@" > "$out/plan.txt" 2>&1
start=$(date +%s%N)
timeout "${LIMIT_S:-900}" python3 -m sweep.cli run examples/seed-study.yaml "${sets[@]}" "$@" > "$out/run.log" 2>&1
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
python3 -m benchmarks.sweep_bench --phases-only /tmp/seed-study/seed-study > "$out/phases.md" 2>&1 || true
# wall.txt last: issue30_gpu.sh's seed-wait packs everything as soon as it appears
echo "exit $rc wall $((ms / 1000)).$(printf %03d $((ms % 1000))) s" | tee "$out/wall.txt"
tail -n 30 "$out/run.log"
