#!/usr/bin/env bash
# bash scripts/gpu/stage.sh N — keep the carried GGUF part N (.gpu/pN/partN) under /root/qwen05/parts.
set -euo pipefail
mkdir -p /root/qwen05/parts
cp ".gpu/p$1/part$1" /root/qwen05/parts/
ls -l /root/qwen05/parts | tail -n +2 | wc -l
