#!/usr/bin/env bash
# One device call of issue 14's benchmark: install the carried wheels (.bench-wheels/ours for our
# trainable and the seed recipe, .bench-wheels/peer for Unsloth, each in its own directory), print the
# machine and versions, then run `python -m benchmarks.speed suite "$@"` with results under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
[ -d /tmp/site/trl ] || pipi /tmp/site .bench-wheels/ours/*.whl || exit 1
[ -d /tmp/peer/unsloth ] || pipi /tmp/peer .bench-wheels/peer/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/machine.txt"
python3 - <<'PY' | tee -a "$OUT/machine.txt"
import importlib, datetime
for m in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "triton"):
    print(m, importlib.import_module(m).__version__)
print("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"))
PY
PYTHONPATH=/tmp/peer python3 -c "import importlib.metadata as m; print('unsloth', m.version('unsloth'), 'trl', m.version('trl'))" | tee -a "$OUT/machine.txt"
python3 -m benchmarks.speed suite --out "$OUT" "$@" 2>&1 | tee "$OUT/suite.log"
