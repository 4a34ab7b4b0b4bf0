#!/usr/bin/env bash
# bash scripts/gpu/setup.sh — after the 10 stage.sh calls: assemble and check the GGUF, install the
# carried wheels, data and NLTK tables under /root, and save the backbone as a bf16 HF folder once.
set -euo pipefail
source scripts/gpu/env.sh
GGUF=/root/qwen05/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if [ ! -f "$GGUF" ]; then
  cat /root/qwen05/parts/part{0,1,2,3,4,5,6,7,8,9} > "$GGUF.tmp"
  echo "$SHA  $GGUF.tmp" | sha256sum -c - && mv "$GGUF.tmp" "$GGUF"
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site .whl/*.whl
mkdir -p /root/data /root/nltk_data /root/runs /root/logs
cp -r .gpu/data/. /root/data/ && cp -r .gpu/nltk_data/. /root/nltk_data/
[ -f /root/qwen05_hf/config.json ] || python scripts/gguf_to_hf.py --backbone qwen25_coder_0p5b --gguf "$GGUF" --out /root/qwen05_hf
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee /root/logs/device.txt
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a /root/logs/device.txt
