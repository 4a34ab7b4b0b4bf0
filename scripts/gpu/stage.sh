#!/usr/bin/env bash
# bash scripts/gpu/stage.sh N [MODEL] — keep the carried GGUF part N under /root/MODEL/parts:
#   MODEL qwen05 (default): .gpu/pN/partN, the 0.5B in 10 parts; smollm2: .gpu/sN/partN, the 135M in 2.
set -euo pipefail
model=${2:-qwen05}
case "$model" in
  qwen05) from=".gpu/p$1/part$1" ;;
  smollm2) from=".gpu/s$1/part$1" ;;
  *) echo "unknown model $model (qwen05 or smollm2)" >&2; exit 2 ;;
esac
mkdir -p "/root/$model/parts"
cp "$from" "/root/$model/parts/"
ls -l "/root/$model/parts" | tail -n +2 | wc -l
