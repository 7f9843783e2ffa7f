#!/usr/bin/env bash
# Issue 14's scale target: one LoRA (r = 16, all seven projections) ORPO step of a model with
# Qwen2.5-0.5B's shape (random weights from the test generator, every matrix stored Q8_0) on a
# PROMPT-token prompt (default 32,768) with two RESPONSE-token responses (default 256), on the
# CPU. Runs the ignored test long_context::a_qwen25_05b_shaped_q8_0_model_trains_one_orpo_step_on_a_32k_prompt
# and appends its JSON line (step seconds, peak RSS of the step, the trainer's prediction) to
# OUT/random_q8_0_orpo_step.jsonl. About an hour at 32,768 tokens on 2 cores; 1 minute at 2,048.
#   bash bench/train_qwen_shape.sh [OUT] [PROMPT] [RESPONSE]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results}; PROMPT=${2:-32768}; RESPONSE=${3:-256}
mkdir -p "$OUT"
SEALONG_PROMPT_TOKENS="$PROMPT" SEALONG_RESPONSE_TOKENS="$RESPONSE" \
  cargo test --release -q -p sealong-tests --test suite \
  long_context::a_qwen25_05b_shaped_q8_0_model_trains_one_orpo_step_on_a_32k_prompt -- --ignored --nocapture \
  | grep '^{"bench":"random_q8_0_orpo_step"' | tee -a "$OUT/random_q8_0_orpo_step.jsonl"
