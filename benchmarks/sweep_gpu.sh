#!/usr/bin/env bash
# Issue 22's sweep benchmark on the lent GPU (carry .gpu-wheels, from ../shared/tools/gpu-wheels):
#   bash benchmarks/sweep_gpu.sh [sweep_bench.py args]      results under $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
[ -d /tmp/gsite/ray ] || pipi /tmp/gsite .gpu-wheels/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/gsite
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
python3 -c "import torch, transformers, peft, ray; print(torch.__version__, transformers.__version__, peft.__version__, ray.__version__)" | tee -a "$OUT/machine.txt"
python3 -m benchmarks.sweep_bench --out "$OUT/${TAG:-run}" "$@"
