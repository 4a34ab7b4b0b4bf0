#!/usr/bin/env bash
# bash scripts/gpu/restore_runs.sh RESULTS_DIR [ADAPTERS_DIR] — put an earlier session's arms back under
# $RUNS on a fresh machine: the committed small files (train_result.json, eval_*/results.json, ...) from
# RESULTS_DIR, each arm's committed overrides.yaml as .hydra/overrides.yaml (what `retrain` inherits), and,
# when ADAPTERS_DIR is given, each arm's adapter from ADAPTERS_DIR/<arm>/ (checked against
# RESULTS_DIR/adapters.sha256). Without adapters, lanes.py can still select among the arms (`best:` reads
# their dev results) and retrain them; scoring one again needs its adapter.
#   bash scripts/gpu/restore_runs.sh results/2026-12-04_h200_s13
set -euo pipefail
source scripts/gpu/env.sh
mkdir -p "$RUNS"
cp -r "$1"/. "$RUNS"/
for saved in "$1"/*/overrides.yaml; do
  [ -e "$saved" ] || continue
  arm=$(basename "$(dirname "$saved")")
  mkdir -p "$RUNS/$arm/.hydra" && cp "$saved" "$RUNS/$arm/.hydra/overrides.yaml"
done
if [ -n "${2:-}" ]; then
  for adapter in "$2"/*/; do
    arm=$(basename "$adapter")
    mkdir -p "$RUNS/$arm/adapter" && cp "$adapter"* "$RUNS/$arm/adapter/"
  done
  (cd "$2" && sha256sum -c --quiet "$OLDPWD/$1/adapters.sha256")
fi
ls "$RUNS"
