# Sourced by the benchmarks' device scripts (gpu.sh, gpu1_packing.sh, gpu2.sh, quality_gpu.sh,
# three_per_gpu.sh). The lent GPU machine reaches no hub and no package index: every script runs
# offline with one model/compile cache, and installs the wheels it carried with `pipi`.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
export QLORA_SWEEP_CACHE=${QLORA_SWEEP_CACHE:-/tmp/qs-cache}
# pipi DIR [pip options] WHEEL...: install carried wheels into DIR, without an index or their dependencies.
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$1" "${@:2}"; }
