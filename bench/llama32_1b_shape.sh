#!/usr/bin/env bash
# sealong beside llama.cpp on a model of Llama-3.2-1B's shape (random weights, made by
# bench/llama32_1b_shape.py; 1.24 B parameters): load time, RSS after loading, the loader's peak
# and one-stream decode tok/s (256 greedy tokens after 64), on the same GGUF and text, one after
# the other on an otherwise idle machine.
#   bash bench/llama32_1b_shape.sh [OUT] [FTYPE] [--precision=exact|int8]
# OUT defaults to bench/results; FTYPE to Q4_K_M. The GGUFs (2.5 GB f16, about 0.8 GB Q4_K_M) stay
# in $WORK (default /tmp/sealong-llama1b); only the JSON lines are written to OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results; FTYPE=Q4_K_M; PRECISION=exact
for a in "$@"; do
  case "$a" in
    --precision=*) PRECISION="${a#*=}" ;;
    Q*) FTYPE="$a" ;;
    *) OUT="$a" ;;
  esac
done
WORK=${WORK:-/tmp/sealong-llama1b}
source bench/_common.sh
bench_setup "$OUT"
source bench/peers/_venv.sh
F16="$WORK/llama32-1b-shape-f16.gguf"
Q="$WORK/llama32-1b-shape-$FTYPE.gguf"
if [ ! -e "$F16" ]; then
  peers_venv gguf
  "$PY" bench/llama32_1b_shape.py f16 tests/golden/families/llama-3.1-instruct "$F16"
fi
if [ ! -e "$Q" ]; then
  peers_venv llamacpp
  "$PY" bench/llama32_1b_shape.py quantize "$F16" "$Q" "$FTYPE"
fi
PEER="$OUT/llamacpp_decode_llama32_1b_shape_$FTYPE.json"
DECODE_ONLY=1 bash bench/peers/llamacpp_decode.sh "$Q" | tail -1 > "$PEER"
"$SEALONG" bench decode --device cpu --precision "$PRECISION" --model "$Q" --text "$OUT/corpus.txt" \
  --decode-only --runs 3 --peer "$PEER" | tail -1 > "$OUT/sealong_decode_llama32_1b_shape_${FTYPE}_$PRECISION.json"
echo "wrote $OUT/sealong_decode_llama32_1b_shape_${FTYPE}_$PRECISION.json"
