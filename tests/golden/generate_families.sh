#!/usr/bin/env bash
# Regenerates tests/golden/family_models/ (tiny random Llama-3, Qwen2 and Mistral models made by
# transformers, their GGUF copies written by gguf-py, and transformers' logits for them; see
# generate_families.py) in the peers' torch venv of bench/peers/_venv.sh.
#   bash tests/golden/generate_families.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/peers/_venv.sh
OUT=${1:-tests/golden/family_models}
peers_venv torch
rm -rf "$OUT"
"$PY" tests/golden/generate_families.py "$OUT"
