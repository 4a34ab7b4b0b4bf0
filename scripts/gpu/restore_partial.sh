#!/usr/bin/env bash
# bash scripts/gpu/restore_partial.sh RUNS_TGZ CHECKPOINTS_DIR — on a fresh machine, put back the runs
# a lost machine was in the middle of: the small files of RUNS_TGZ (a returned `runs.tgz`: curves,
# configs, partial evaluations) and each run's checkpoint, joined from CHECKPOINTS_DIR/RUN.ckpt.partN
# (returned by lanes.py in parts of at most 16 MiB), as $RUNS/RUN/checkpoints/last.ckpt. The next `train` step of RUN then
# resumes from that checkpoint instead of step 0. Both live outside git (.artifacts/), carried.
#   bash scripts/gpu/restore_partial.sh .artifacts/s13/runs.tgz .artifacts/s13/checkpoints
set -euo pipefail
source scripts/gpu/env.sh
mkdir -p "$RUNS" "$LOGS"
tar xzf "$1" -C "$(dirname "$RUNS")"
for first in "$2"/*.ckpt.part0; do
  [ -e "$first" ] || continue
  run=$(basename "$first" .ckpt.part0)
  mkdir -p "$RUNS/$run/checkpoints"
  ls "$2/$run".ckpt.part[0-9]* | sort -V | xargs cat > "$RUNS/$run/checkpoints/last.ckpt"
  echo "$run: resumes from $(python -c "import torch,sys; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['global_step'])" "$RUNS/$run/checkpoints/last.ckpt") steps"
done
ls "$RUNS"
