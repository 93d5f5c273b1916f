#!/usr/bin/env bash
# SmolLM2 runs on the lent GPU (issues 23 and 24). The GGUF (98 MB) and .gpu-wheels exceed one call's
# carry, so they travel over calls on one warm machine: wheels (sweep_gpu.sh installs them in /tmp/gsite),
# then .qa (first half, copied to /tmp/qcarry), then this script with .qb carried:
#   bash benchmarks/smollm2_gpu.sh quickstarts|grid PARTS SECONDS
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
export PYTHONPATH=$PWD:/tmp/gsite
[ -d /tmp/gsite/gguf ] || pipi /tmp/gsite .qc/gguf-*.whl || exit 1
GGUF=$QLORA_SWEEP_CACHE/downloads/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  mkdir -p "$(dirname "$GGUF")" && cat /tmp/qcarry/gguf.part-a .qc/gguf.part-b > "$GGUF" || exit 1
fi
python3 -c "from trainables.builtin_models import smollm2_dir; print(smollm2_dir())" >/tmp/convert.log 2>&1 || { tail -5 /tmp/convert.log; exit 1; }
case "$1" in
quickstarts)
  for y in examples/quickstart.yaml examples/quickstart-gpu.yaml; do
    n=$(basename $y .yaml); s=$(date +%s%N)
    timeout ${2:-240} python3 -m sweep.cli run $y --set storage_path=/tmp/qs-results >"$OUT/$n.log" 2>&1
    echo "$n exit $? wall $(( ($(date +%s%N) - s) / 1000000 )) ms" | tee -a "$OUT/$n.log"; tail -n 25 "$OUT/$n.log"  # no bc there
  done ;;
grid)
  mkdir -p /tmp/grid; pids=()
  for i in $(seq 0 $(($2 - 1))); do
    timeout $3 python3 -m benchmarks.grid --out /tmp/grid/part-$i.jsonl --part $i/$2 >/tmp/grid/part-$i.log 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait $p; done
  cat /tmp/grid/part-*.jsonl > "$OUT/grid.jsonl"; wc -l "$OUT/grid.jsonl"; tail -n 3 /tmp/grid/part-0.log ;;
esac
