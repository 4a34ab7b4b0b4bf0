#!/usr/bin/env bash
# bash scripts/gpu/replication_lanes.sh BUDGET_S — the replication's lanes (issue "Real-data
# replication"), the same in every call of a session: a rerun skips finished steps and resumes the
# rest. Three TSW arms (the pre-registered learning rates), each scored on the dev split; the arm
# the pre-registered rule selects (lanes.py `best:`) on HotpotQA, LoCoMo and IFEval; then the frozen
# LoCoMo full_context baseline. `training.nonfinite=skip` drops (and counts) a step with non-finite
# gradients instead of ending the arm.
set -euo pipefail
source scripts/gpu/env.sh
A=best:tsw_lr2e-4,tsw_lr1e-3,tsw_lr5e-3
G=training.nonfinite=skip
python scripts/gpu/lanes.py --budget "$1" \
  "train tsw_lr2e-4 training.optim.lr=2e-4 $G | eval tsw_lr2e-4 episode_qa | eval $A hotpotqa | eval frozen locomo_full" \
  "train tsw_lr1e-3 training.optim.lr=1e-3 $G | eval tsw_lr1e-3 episode_qa | eval $A locomo" \
  "train tsw_lr5e-3 training.optim.lr=5e-3 $G | eval tsw_lr5e-3 episode_qa | eval $A ifeval"
