#!/usr/bin/env bash
# Scoring speed of sealong beside its peers, in the same run on the same text: sentence
# embeddings (sentence-transformers on torch CPU), batched embedding MBR (numpy) and ROUGE-L MBR
# (rouge-score). Runs the peers first, then `sealong bench embed|mbr|rouge --peer`, and writes
# each one's JSON line to OUT (default bench/results) as it goes; sealong's lines carry the ratios
# under "vs_peer".
#   bash bench/scoring.sh [OUT] [--skip-peer] [--mbr-device=auto|cpu|gpu]
# Run it on an otherwise idle machine: the torch peer spins on every core and a concurrent build
# can slow it several times (every figure carries load1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results; SKIP_PEER=0; MBR_DEVICE=auto
for a in "$@"; do
  case "$a" in
    --skip-peer) SKIP_PEER=1 ;;
    --mbr-device=*) MBR_DEVICE="${a#*=}" ;;
    *) OUT="$a" ;;
  esac
done
source bench/_common.sh
bench_setup "$OUT"
# One model directory for both sides (the same files the peer's wheel holds, sha256-checked).
EMBEDDER=$("$SEALONG" models fetch all-minilm-l6-v2 | awk '{print $2}')
if [ "$SKIP_PEER" = 0 ]; then
  # Creates the venvs on first use (the torch one is ~5.8 GB) before anything is timed.
  echo "== st_embed ($(uptime))"
  bash bench/peers/st_embed.sh "$EMBEDDER" | tail -1 > "$OUT/st_embed.json"
  echo "== rouge_mbr ($(uptime))"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/peers/rouge_mbr.py | tail -1 > "$OUT/rouge_mbr.json"
fi
echo "== sealong ($(uptime))"
"$SEALONG" bench embed --embedder "$EMBEDDER" --text "$OUT/corpus.txt" --peer "$OUT/st_embed.json" \
  | tail -1 > "$OUT/sealong_embed.json"
"$SEALONG" bench mbr --device "$MBR_DEVICE" --peer "$OUT/rouge_mbr.json" | tail -1 > "$OUT/sealong_mbr.json"
"$SEALONG" bench rouge --text "$OUT/corpus.txt" --peer "$OUT/rouge_mbr.json" | tail -1 > "$OUT/sealong_rouge.json"
echo "== done ($(uptime)); wrote $OUT/{st_embed,rouge_mbr,sealong_embed,sealong_mbr,sealong_rouge}.json"
