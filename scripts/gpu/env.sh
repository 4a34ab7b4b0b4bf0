# Sourced by every GPU command: wheels, data, caches and the backbone folder live under /root,
# which survives between the calls of one warm machine (scripts/gpu/README.md).
export PYTHONPATH=/root/site:$PWD/src:$PWD
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export DELTAMEM_DATA_DIR=/root/data DELTAMEM_NLTK_DATA=/root/nltk_data DELTAMEM_CACHE=/root/cache
export RUNS=${RUNS:-/root/runs} LOGS=${LOGS:-/root/logs} BACKBONE_PATH=${BACKBONE_PATH:-/root/qwen05_hf}
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
