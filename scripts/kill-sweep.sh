#!/usr/bin/env bash
# The kill sweep at full size: every appending stage (sample, score, eval, train, run) SIGKILLed
# at MOMENTS seeded random moments (default 200 per stage), rerun, and compared with an
# uninterrupted run file by file (tests/tests/suite/kill_sweep.rs says how). CI runs the same
# tests with 20 moments per stage. One JSON line per stage is appended to
# bench/results/kill_sweep.jsonl (kills, chains, where the kills landed, wall time); the table in
# RELIABILITY.md comes from it. Takes about an hour on 2 cores at 200 moments.
#   MOMENTS=200 SEED=17 bash scripts/kill-sweep.sh [STAGE...]   (stages: sample score eval train run)
set -euo pipefail
cd "$(dirname "$0")/.."
moments=${MOMENTS:-200}
seed=${SEED:-17}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(sample score eval train run)
mkdir -p bench/results
report="$PWD/bench/results/kill_sweep.jsonl"
filters=()
for s in "${stages[@]}"; do filters+=("kill_sweep::${s}_survives_kills"); done
# One stage at a time: the moments are drawn over each stage's own wall time.
SEALONG_KILL_LABEL="$(date -u +%F) $(git rev-parse --short HEAD) $(nproc) cores" \
  SEALONG_KILL_MOMENTS=$moments SEALONG_KILL_SEED=$seed SEALONG_KILL_REPORT=$report \
  cargo test -p sealong-tests --test suite --locked -- "${filters[@]}" --exact --test-threads=1 --nocapture
echo "results appended to $report"
tail -n ${#stages[@]} "$report"
