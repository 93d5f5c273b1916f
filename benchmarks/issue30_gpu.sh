#!/usr/bin/env bash
# Issue 30's GPU measurements, as many as fit one device call, in order (carry .gpu-wheels):
#   STEPS="single defaults cap24 cap40 six micro32 budget profile dropout gen samples imports seed" bash benchmarks/issue30_gpu.sh     -> $OUT/issue30.tgz
#   (seed-bg starts the seed study detached, on a warm machine: it outlives the call; seed-wait, in the next
#   call, waits for it and packs what it wrote)
# single: one compiled trial alone (the reference rate); defaults / cap24 / cap40 / six: the e2e sweep
# with no overrides, a 24 or 40 GB cap (its plan printed first), or 6 trials per GPU; seed: the seed
# study with judge.backend=none. Everything is packed after each step, so a call cut short keeps the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
[ -d /tmp/gsite/ray ] || pipi /tmp/gsite .gpu-wheels/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/gsite
R=/tmp/issue30
mkdir -p "$R"
final=$OUT
logs() {  # each seed-study trial's log and the Ray logs of workers that died (tails: the archive stays small)
  mkdir -p "$R/seed-logs"
  for f in /tmp/seed-study/seed-study/*/trial.log; do
    [ -f "$f" ] && tail -n 200 "$f" > "$R/seed-logs/$(basename "$(dirname "$f")" | cut -c1-48).log"
  done
  grep -l -s -E "Traceback|Fatal|SIGSEGV|Check failed" /tmp/ray/session_latest/logs/worker-*.err \
    /tmp/ray/session_latest/logs/python-core-worker-*.log | head -n 8 \
    | while read -r f; do tail -n 120 "$f" > "$R/seed-logs/ray-$(basename "$f")"; done
  dmesg 2>/dev/null | grep -i -E "oom|killed process" | tail -n 20 > "$R/seed-logs/dmesg-oom.txt"
}
pack() { cp -r "$QLORA_SWEEP_CACHE/node_stats" "$R/" 2>/dev/null; logs; tar czf "$final/issue30.tgz" -C "$R" .; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/machine.txt"
git log -1 --format='commit %H %s' >> "$R/machine.txt" 2>/dev/null
python3 -c "import json; from benchmarks.common import prepare; print(json.dumps(prepare()))" > "$R/prepare.txt" 2>&1
bench() { timeout "$1" python3 -m benchmarks.sweep_bench --out "$R/$2" "${@:3}" > "$R/$2.log" 2>&1; }
for step in ${STEPS:-single defaults}; do
  start=$(date +%s)
  case $step in
    single) bench 240 single --skip-sweep ;;
    budget)  # a seed-study trial's shape (all-linear+lm_head, dropout 0.05, 16 x 512) alone at activation
      # memory budgets 1.0, 0.9 and 0.6 (benchmarks/probe_site): its peak and rate each, in a cache of
      # their own (their peaks and rates must not teach the sweeps' node stats, nor one budget's compiled graphs serve another)
      for b in 1.0 0.9 0.6; do
        rm -rf /tmp/single  # a single trial resumes its own finished output: each budget starts fresh
        QLORA_PROBE_BUDGET=$b PYTHONPATH=$PWD/benchmarks/probe_site:$PYTHONPATH QLORA_SWEEP_CACHE=/tmp/probe-cache-$b \
          bench 200 "budget-$b" --skip-sweep \
          --single-sets "training.compile=true;lora.dropout=0.05;lora.target_modules=all-linear+lm_head"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['single']; [print(sys.argv[2], k, v.get('peak_mem_gb'), v.get('train_tokens_per_s'), v.get('error','')[-300:]) for k,v in r.items()]" \
          "$R/budget-$b/sweep_bench.json" "$b" | tee -a "$R/budget.txt"
      done ;;
    micro32)  # one trial at 16 x 512 and at 32 x 512 micro-batches: what a larger batch (or several
      # adapters over one base in one process, issue 30's item 4) could add over 16 x 512
      bench 300 micro32 --skip-sweep --single-sets "training.compile=true" "training.compile=true;training.batch_size=32" ;;
    profile)  # the seed study's heavy trial shape alone, compiled: kernel time by op over its second window
      # (where a step's time goes beyond the base's matmuls: the lever for a faster step)
      timeout 300 python3 -m benchmarks.speed ours --profile --out "$R/profile" --name seed-all-4bit \
        --set training.compile=true --set lora.dropout=0.05 --set lora.target_modules=all-linear+lm_head \
        > "$R/profile.log" 2>&1 ;;
    dropout)  # the seed's heavy shape alone, compiled, with the seed's LoRA dropout 0.05 and without: what
      # peft's per-module dropout (a masked copy of each adapted layer's input) costs a step
      bench 300 dropout --skip-sweep --single-sets \
        "training.compile=true;lora.target_modules=all-linear+lm_head;lora.dropout=0.05" \
        "training.compile=true;lora.target_modules=all-linear+lm_head;lora.dropout=0.0" ;;
    gen)  # the samples' decode speed: the e2e base (4- and 8-bit 3B) at 8 and 16 rows, quantized and dequantized once
      for bits in 4 8; do
        timeout 150 python3 -m benchmarks.gen_probe --set model.path=/tmp/qlora-bench/model --set quantization.bits=$bits \
          > "$R/gen-$bits.log" 2>&1
      done ;;
    samples)  # the driver's samples after a sweep on the e2e base: one mixed batch (before) against two dense passes (now)
      QLORA_SWEEP_CACHE=/tmp/gen-probe-cache timeout 240 python3 -m benchmarks.gen_probe --set model.path=/tmp/qlora-bench/model \
        --set quantization.bits=4 --set data.source=/tmp/qlora-bench/data.jsonl --set data.eval_rows=100 \
        --adapter /tmp/gen-probe-adapter > "$R/samples.log" 2>&1 ;;
    imports)  # what a trial worker's imports cost on this host (part of the ~15 s from Tune's start to a first trial)
      python3 -X importtime -c "import trainables.trial" 2> "$R/imports.txt"
      sort -t'|' -k2 -n "$R/imports.txt" | tail -n 40 > "$R/imports-top.txt" ;;
    defaults|defaults2) bench 300 "$step" --skip-single ;;  # defaults2: the same again on the warm node
    fresh1|fresh2)  # the e2e sweep on caches of its own (a fresh node's compiles) with 1 or 2 compile turns per GPU
      QLORA_SWEEP_CACHE=/tmp/fresh-cache-$step QLORA_SWEEP_COMPILE_TURNS=${step#fresh} bench 300 "$step" --skip-single ;;
    six) bench 300 six --skip-single --sweep-sets resources.gpu=0.1666 ;;
    cap24|cap40)
      gb=${step#cap}
      python3 -m sweep.cli plan benchmarks/sweep_e2e.yaml --set resources.gpu_memory_gb="$gb" > "$R/$step-plan.txt" 2>&1
      bench 330 "$step" --skip-single --sweep-sets resources.gpu_memory_gb="$gb" ;;
    seed) OUT=$R JUDGE=none LIMIT_S=${SEED_LIMIT_S:-660} bash benchmarks/seed_study_gpu.sh > "$R/seed.log" 2>&1 ;;
    seed-bg)  # the seed study outlives a 10-min call: started here, collected by seed-wait in the next call
      OUT=$R JUDGE=none LIMIT_S=${SEED_LIMIT_S:-900} setsid nohup bash benchmarks/seed_study_gpu.sh \
        > "$R/seed.log" 2>&1 < /dev/null & ;;
    seed-wait)
      for _ in $(seq "${WAIT_S:-540}"); do [ -s "$R/seed-study/wall.txt" ] && break; sleep 1; done
      cat "$R/seed-study/wall.txt" 2>/dev/null ;;
  esac
  echo "$step: exit $? in $(( $(date +%s) - start )) s" | tee -a "$R/steps.txt"
  pack
done
grep -h "single \|sweep \[\|effective\|first output" "$R"/*.log
