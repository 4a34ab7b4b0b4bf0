#!/usr/bin/env bash
# The GPU runs behind benchmarks/RESULTS.md. Each part fits one 10-minute device command:
#   bash benchmarks/gpu_suite.sh tests|decode|prefill|train|scan
# Results (JSON) and logs go to $OUT (or ./bench_out). Wheels for hydra-core/omegaconf/antlr4
# go in .whl where the machine lacks them (see benchmarks/README.md).
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src:. PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
B="--backbone qwen3_4b --random-init --device cuda --dtype bfloat16"  # without them: CPU, fp32
run() {  # run NAME SECONDS ARGS...: one benchmark, its log and JSON in $OUT
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" python "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? ($(tail -n 1 "$OUT/$name.log" | cut -c1-120))"
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/device.txt"
case "${1:-tests}" in
  tests)   timeout 500 python -m pytest -q tests/test_scan.py tests/test_decode_kernel.py tests/test_attach.py \
             > "$OUT/gpu_tests.log" 2>&1; tail -n 3 "$OUT/gpu_tests.log" ;;
  decode)  run decode_4k 330 benchmarks/decode.py $B --prompts 4096 --batch 1,16 --new-tokens 128 --modes decode \
             --reps 3 --warmup 1
           run decode_32k 240 benchmarks/decode.py $B --prompts 32768 --batch 1 --new-tokens 64 --modes decode \
             --reps 3 --warmup 1 ;;
  prefill) run prefill_tsw 300 benchmarks/prefill.py $B --lengths 1024,8192,32768 --reps 5 --warmup 2
           run prefill_msw 240 benchmarks/prefill.py $B --memory msw --lengths 8192 --reps 5 --warmup 2 ;;
  train)   run train_tsw 280 benchmarks/train_step.py $B --reps 5 --warmup 2
           run train_msw 280 benchmarks/train_step.py $B --memory msw --reps 5 --warmup 2 ;;
  scan)    run scan 200 benchmarks/scan.py --device cuda
           timeout 200 python benchmarks/profile_decode.py $B --steps 16 > "$OUT/profile_decode.log" 2>&1 ;;
  *)       echo "unknown part $1"; exit 2 ;;
esac
