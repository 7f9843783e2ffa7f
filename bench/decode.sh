#!/usr/bin/env bash
# Decoder speed of sealong beside llama.cpp (llama-cpp-python built from PyPI) on the same GGUF
# and the same text, one after the other on an otherwise idle machine. Writes the two JSON lines
# and the corpus to OUT (default bench/results) and prints the ratios.
#   bash bench/decode.sh [OUT] [--precision=exact|int8] [--skip-peer]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results; PRECISION=exact; SKIP_PEER=0
for a in "$@"; do
  case "$a" in
    --precision=*) PRECISION="${a#*=}" ;;
    --skip-peer) SKIP_PEER=1 ;;
    *) OUT="$a" ;;
  esac
done
source bench/_common.sh
bench_setup "$OUT"
GGUF=$("$SEALONG" models fetch smollm2-135m-instruct | awk '{print $2}')
if [ "$SKIP_PEER" = 0 ]; then
  bash bench/peers/llamacpp_decode.sh "$GGUF" | tail -1 > "$OUT/llamacpp_decode.json"
fi
"$SEALONG" bench decode --device cpu --precision "$PRECISION" --model "$GGUF" --text "$OUT/corpus.txt" \
  --peer "$OUT/llamacpp_decode.json" | tail -1 > "$OUT/sealong_decode_$PRECISION.json"
echo "wrote $OUT/sealong_decode_$PRECISION.json"
