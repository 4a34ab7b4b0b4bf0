#!/usr/bin/env bash
# The GPU run behind benchmarks/RESULTS.md: GPU tests, then every benchmark, JSON into $OUT (or ./bench_out).
# Usage (repo root, wheels for hydra/omegaconf/antlr in .whl if the machine lacks them):
#   bash benchmarks/gpu_suite.sh
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src:. PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
B="--backbone qwen3_4b --random-init"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
timeout 150 python -m pytest -q -x tests/test_scan.py tests/test_decode_kernel.py tests/test_attach.py 2>&1 | tail -3 | tee "$OUT/gpu_tests.txt"
timeout 200 python benchmarks/decode.py $B --prompts 4096 --batch 1,16 --new-tokens 128 --modes decode --reps 3 --warmup 1 --json "$OUT/decode_4k.json" 2>&1 | tail -12
timeout 120 python benchmarks/prefill.py $B --lengths 1024,8192,32768 --reps 5 --warmup 2 --json "$OUT/prefill_tsw.json" 2>&1 | tail -8
timeout 90 python benchmarks/train_step.py $B --reps 3 --warmup 1 --json "$OUT/train_tsw.json" 2>&1 | tail -8
timeout 90 python benchmarks/prefill.py $B --memory msw --lengths 8192 --reps 5 --warmup 2 --json "$OUT/prefill_msw.json" 2>&1 | tail -5
timeout 60 python benchmarks/scan.py --device cuda --json "$OUT/scan.json" 2>&1 | tail -8
timeout 120 python benchmarks/decode.py $B --prompts 32768 --batch 1 --new-tokens 64 --modes decode --reps 3 --warmup 1 --json "$OUT/decode_32k.json" 2>&1 | tail -6
