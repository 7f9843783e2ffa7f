#!/usr/bin/env bash
# Regenerates tests/golden/kquants/ (K-quant dequantization goldens; see generate_kquants.py):
# llama.cpp's quantizer (llama-cpp-python, the peers' llamacpp venv) writes the files from the
# default SmolLM2 Q4_1 GGUF, gguf-py (the peers' torch venv) dequantizes rows of them.
#   bash tests/golden/generate_kquants.sh [SRC.gguf] [WORK]
# The GGUFs (60-145 MB each) stay in WORK (default /tmp/sealong-kquants); only the extracted rows
# are committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/peers/_venv.sh
SRC=${1:-$(cargo run -q --release -p sealong-cli -- models fetch smollm2-135m-instruct | awk '{print $2}')}
WORK=${2:-/tmp/sealong-kquants}
peers_venv torch
TORCH_PY=$PY
"$TORCH_PY" tests/golden/generate_kquants.py tiny "$WORK"
peers_venv llamacpp
"$PY" tests/golden/generate_kquants.py quantize "$SRC" "$WORK"
"$TORCH_PY" tests/golden/generate_kquants.py extract "$WORK" tests/golden/kquants
"$TORCH_PY" tests/golden/generate_kquants.py logits "$WORK" tests/golden/kquants
