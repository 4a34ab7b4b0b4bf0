#!/usr/bin/env bash
# The GPU runs behind benchmarks/RESULTS.md. Each part fits one 10-minute device command:
#   bash benchmarks/gpu_suite.sh tests|tests_one_process|graph|decode|prefill|train|scan
# ONLY="prefill_tsw train_tsw ..." runs just the named benchmarks of a part.
# prefill and train time the chunk-parallel scan kernels and, in `_rows` runs, the row kernels (`_onepass`: the
# chunk chain in one pass rather than two levels, DELTAMEM_CHAIN_GROUPS=0; `_unfused`: the gates in PyTorch
# rather than one Triton launch, DELTAMEM_FUSED_ACTIVATE=0); `_param` runs
# keep the memory's projections in fp32 (memory.compute_dtype=param); the first run of each profiles one call
# per variant (--profile: device time per kernel); train also replays each step from a CUDA graph (--graph).
# Results (JSON) and logs go to $OUT (or ./bench_out). Wheels for hydra-core/omegaconf/antlr4
# go in .whl where the machine lacks them (see benchmarks/README.md).
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src:. PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
B="--backbone qwen3_4b --random-init --device cuda --dtype bfloat16"  # without them: CPU, fp32
run() {  # run NAME SECONDS ARGS...: one benchmark, its log and JSON in $OUT (ONLY="name ...": just those)
  local name=$1 seconds=$2; shift 2
  [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $name "* ]] || return 0
  timeout "$seconds" python "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? ($(tail -n 1 "$OUT/$name.log" | cut -c1-120))"
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/device.txt"
case "${1:-tests}" in
  tests)   # one pytest per file, so a time limit cuts one file short and the others still report; -rf names
           # every failure in the summary line (a killed run prints none)
           for f in scan decode_kernel attach graph_decode chunk_scan_kernel affine_chain activate_kernel memory_math benchmarks_smoke; do
             timeout "${TEST_SECONDS:-300}" python -m pytest -q -rf --tb=short -p no:cacheprovider "tests/test_$f.py" \
               > "$OUT/gpu_tests_$f.log" 2>&1
             echo "test_$f: exit $? ($(tail -n 1 "$OUT/gpu_tests_$f.log"))"
           done ;;
  tests_one_process)  # the same files in one process (as the session-5 run whose chunk-scan failures did not recur alone)
           timeout "${TEST_SECONDS:-900}" python -m pytest -q -rf --tb=short -p no:cacheprovider tests/test_scan.py \
             tests/test_decode_kernel.py tests/test_attach.py tests/test_graph_decode.py tests/test_chunk_scan_kernel.py \
             > "$OUT/gpu_tests_one_process.log" 2>&1
           echo "one process: exit $? ($(tail -n 1 "$OUT/gpu_tests_one_process.log"))" ;;
  graph)   R="--new-tokens 256 --reps 5 --warmup 1"
           run graph_4k 200 benchmarks/decode.py $B --prompts 4096 --batch 1 --modes graph,graph_generate $R
           run graph_4k_b16 220 benchmarks/decode.py $B --prompts 4096 --batch 16 --modes graph $R
           run graph_32k 180 benchmarks/decode.py $B --prompts 32768 --batch 1 --modes graph,graph_generate $R ;;
  decode)  run decode_4k 330 benchmarks/decode.py $B --prompts 4096 --batch 1,16 --new-tokens 128 --modes decode \
             --reps 3 --warmup 1
           run decode_32k 240 benchmarks/decode.py $B --prompts 32768 --batch 1 --new-tokens 64 --modes decode \
             --reps 3 --warmup 1 ;;
  prefill) # chunk-parallel scan kernels (DELTAMEM_SCAN_PARALLEL=1) unless the name says rows (=0); the memory's
           # projections in the backbone's dtype (memory.compute_dtype=input, the default) unless it says param
           export DELTAMEM_SCAN_PARALLEL=1
           run prefill_tsw 200 benchmarks/prefill.py $B --lengths 1024,8192 --reps 5 --warmup 2 --profile
           run prefill_tsw_param 150 benchmarks/prefill.py $B --lengths 8192 --reps 5 --warmup 2 \
             --override memory.compute_dtype=param
           run prefill_msw 150 benchmarks/prefill.py $B --memory msw --lengths 8192 --reps 5 --warmup 2
           DELTAMEM_SCAN_PARALLEL=0 run prefill_tsw_rows 150 benchmarks/prefill.py $B --lengths 8192 --reps 5 --warmup 2
           DELTAMEM_CHAIN_GROUPS=0 run prefill_tsw_onepass 150 benchmarks/prefill.py $B --lengths 8192 --reps 5 --warmup 2
           DELTAMEM_FUSED_ACTIVATE=0 run prefill_tsw_unfused 150 benchmarks/prefill.py $B --lengths 1024,8192 --reps 5 \
             --warmup 2
           run prefill_tsw_32k 200 benchmarks/prefill.py $B --lengths 32768 --reps 5 --warmup 1 ;;
  train)   # every step also replayed from a CUDA graph (--graph); same naming as prefill
           export DELTAMEM_SCAN_PARALLEL=1
           run train_tsw 300 benchmarks/train_step.py $B --reps 5 --warmup 2 --profile --graph
           run train_msw 240 benchmarks/train_step.py $B --memory msw --reps 5 --warmup 2 --graph
           DELTAMEM_SCAN_PARALLEL=0 run train_tsw_rows 240 benchmarks/train_step.py $B --reps 5 --warmup 2 --graph
           run train_tsw_param 240 benchmarks/train_step.py $B --reps 5 --warmup 2 --override memory.compute_dtype=param ;;
  scan)    run scan 150 benchmarks/scan.py --device cuda
           run scan_b1_8k 150 benchmarks/scan.py --device cuda --batch 1 --lengths 8192 --heads 1,4
           DELTAMEM_CHAIN_GROUPS=0 run scan_b1_8k_onepass 150 benchmarks/scan.py --device cuda --batch 1 --lengths 8192 \
             --heads 1,4
           timeout 200 python benchmarks/profile_decode.py $B --steps 16 > "$OUT/profile_decode.log" 2>&1 ;;
  *)       echo "unknown part $1"; exit 2 ;;
esac
