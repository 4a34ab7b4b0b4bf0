#!/usr/bin/env bash
# bash scripts/gpu/restore_partial.sh RUNS_TGZ CHECKPOINTS_DIR — on a fresh machine, put back the runs
# a lost machine was in the middle of: the small files of RUNS_TGZ (a returned `runs.tgz`: curves,
# configs, partial evaluations) and each CHECKPOINTS_DIR/RUN.ckpt (returned by lanes.py as
# $OUT/checkpoints/RUN.ckpt) as $RUNS/RUN/checkpoints/last.ckpt. The next `train` step of RUN then
# resumes from that checkpoint instead of step 0. Both live outside git (.artifacts/), carried.
#   bash scripts/gpu/restore_partial.sh .artifacts/s13/runs.tgz .artifacts/s13/checkpoints
set -euo pipefail
source scripts/gpu/env.sh
mkdir -p "$RUNS" "$LOGS"
tar xzf "$1" -C "$(dirname "$RUNS")"
for ckpt in "$2"/*.ckpt; do
  [ -e "$ckpt" ] || continue
  run=$(basename "$ckpt" .ckpt)
  mkdir -p "$RUNS/$run/checkpoints" && cp "$ckpt" "$RUNS/$run/checkpoints/last.ckpt"
  echo "$run: resumes from $(python -c "import torch,sys; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['global_step'])" "$ckpt") steps"
done
ls "$RUNS"
