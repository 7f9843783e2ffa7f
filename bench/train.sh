#!/usr/bin/env bash
# Training speed of sealong beside torch + peft (bench/peers/torch_orpo_step.py) on the same GGUF
# and the same text, one after the other on an otherwise idle machine: one LoRA ORPO step of a
# 512-token prompt with two 128-token responses. Then the fused vs eager loss memory at
# V = 49,152 with 512 + 512 response tokens (the loss_kernel measurement, in child processes).
# Writes the JSON lines to OUT (default bench/results) and prints the ratios.
# With --long: the long-context sweep too (issue 14): sealong at 1,024-7,680 prompt tokens with two
# 256-token responses, one process per length, and the peer with gradient checkpointing at
# 1,024-4,096 (its memory passes 20 GiB beyond that).
#   bash bench/train.sh [OUT] [--skip-peer] [--skip-loss] [--long]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results; SKIP_PEER=0; SKIP_LOSS=0; LONG=0
for a in "$@"; do
  case "$a" in
    --skip-peer) SKIP_PEER=1 ;;
    --skip-loss) SKIP_LOSS=1 ;;
    --long) LONG=1 ;;
    *) OUT="$a" ;;
  esac
done
source bench/_common.sh
bench_setup "$OUT"
GGUF=$("$SEALONG" models fetch smollm2-135m-instruct | awk '{print $2}')
if [ "$SKIP_PEER" = 0 ]; then
  # The peer builds its corpus itself (the same text as corpus.txt); PEERS_TEXT would re-join the
  # words with single spaces and change the tokens.
  python3 bench/peers/torch_orpo_step.py "$GGUF" | tail -1 > "$OUT/torch_orpo_step.json"
fi
"$SEALONG" bench train --model "$GGUF" --text "$OUT/corpus.txt" --runs 5 \
  --peer "$OUT/torch_orpo_step.json" | tail -1 > "$OUT/sealong_train_step.json"
echo "wrote $OUT/sealong_train_step.json"
if [ "$SKIP_LOSS" = 0 ]; then
  cargo test -q -p sealong-tests --test suite loss_kernel::fused_vs_eager_memory_flex -- --ignored --nocapture \
    | grep -E "^loss fwd" | tee "$OUT/loss_memory.txt"
fi
if [ "$LONG" = 1 ]; then
  "$SEALONG" bench train --model "$GGUF" --text "$OUT/corpus.txt" --runs 1 \
    --prompt-tokens 1024,2048,4096,7680 --response-tokens 256 > "$OUT/sealong_train_long.jsonl"
  echo "wrote $OUT/sealong_train_long.jsonl"
  if [ "$SKIP_PEER" = 0 ]; then
    : > "$OUT/torch_orpo_step_long.jsonl"
    for p in 1024 2048 4096; do
      python3 bench/peers/torch_orpo_step.py "$GGUF" --prompt-tokens "$p" --response-tokens 256 --runs 1 \
        --checkpointing | tail -1 >> "$OUT/torch_orpo_step_long.jsonl"
    done
    echo "wrote $OUT/torch_orpo_step_long.jsonl"
  fi
fi
