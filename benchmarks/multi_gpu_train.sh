#!/usr/bin/env bash
# Multi-GPU training throughput: one experiment on 1 GPU and on N GPUs of one host, same global batch.
#
#   bash benchmarks/multi_gpu_train.sh OUT_DIR [N=2] [STEPS=3] [STRATEGIES="deepspeed_zero2 ddp"]
#
# Every run is `python src/run.py experiment=msw_qwen4b` with a random-init backbone (no download),
# the local BPE tokenizer and long synthetic chats (write parts fill the 8,192-token window), timed by
# `training.measure_throughput=true` (first optimiser step excluded). Each run directory gets
# `throughput.json`; the table (`benchmarks/throughput_table.py`) compares them with the 1-GPU run.
set -euo pipefail
OUT=${1:?usage: multi_gpu_train.sh OUT_DIR [N] [STEPS] [STRATEGIES]}
N=${2:-2}
STEPS=${3:-3}
STRATEGIES=${4:-"deepspeed_zero2 ddp"}
EXPERIMENT=${EXPERIMENT:-msw_qwen4b}
read -r -a EXTRA <<< "${EXTRA:-}"   # more overrides for every run, e.g. EXTRA="training.batch_size=2"
COMMON=(
  "experiment=$EXPERIMENT" backbone.random_init=true backbone.tokenizer=local_bpe
  train_data=synthetic train_data.num_episodes=2048 "train_data.sessions=[16,16]" train_data.facts=32
  train_data.distractor_turns=6 "trainer.max_steps=$STEPS" training.measure_throughput=true
  training.checkpoint_every=1000000 training.progress_bar=none logger=csv "${EXTRA[@]}"
)
mkdir -p "$OUT"
first=${STRATEGIES%% *}
python src/run.py "${COMMON[@]}" "trainer=$first" trainer.devices=1 "paths.output_dir=$OUT/${first}_1gpu" \
  > "$OUT/${first}_1gpu.log" 2>&1
for strategy in $STRATEGIES; do
  python src/run.py "${COMMON[@]}" "trainer=$strategy" "trainer.devices=$N" "paths.output_dir=$OUT/${strategy}_${N}gpu" \
    > "$OUT/${strategy}_${N}gpu.log" 2>&1
done
python benchmarks/throughput_table.py "$OUT"/*/throughput.json
