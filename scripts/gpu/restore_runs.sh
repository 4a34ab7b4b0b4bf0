#!/usr/bin/env bash
# bash scripts/gpu/restore_runs.sh RESULTS_DIR ADAPTERS_DIR — put an earlier session's arms back under
# $RUNS on a fresh machine: the committed small files (train_result.json, .hydra/overrides.yaml,
# eval_*/results.json, ...) from RESULTS_DIR and each arm's adapter from ADAPTERS_DIR/<arm>/ (kept
# outside git, carried). lanes.py then treats those arms as trained and scored.
#   bash scripts/gpu/restore_runs.sh results/2026-12-03_h200_s10 .artifacts/adapters_s10
set -euo pipefail
source scripts/gpu/env.sh
mkdir -p "$RUNS"
cp -r "$1"/. "$RUNS"/
for adapter in "$2"/*/; do
  arm=$(basename "$adapter")
  mkdir -p "$RUNS/$arm/adapter" && cp "$adapter"* "$RUNS/$arm/adapter/"
done
(cd "$2" && sha256sum -c --quiet "$OLDPWD/$1/adapters.sha256")
ls "$RUNS"
