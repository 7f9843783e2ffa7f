#!/usr/bin/env bash
# The test suite. Needs the default models in the cache (`sealong models fetch`, which
# .ci/run does), for the wgpu tests a Vulkan driver (lavapipe: mesa-vulkan-drivers), and for the
# browser tests Debian's chromium + chromium-driver. The remote-backend tests start
# llama-cpp-python's OpenAI-compatible server, installed here into its own venv (pip builds
# llama.cpp from source the first time, minutes on 2 cores; seconds once pip has the wheel).
# Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The page's wasm, which the browser end-to-end test serves (seconds when nothing changed).
bash web/build.sh
# (llama.cpp's build flags are chosen from this CPU in bench/peers/_venv.sh: no AMX, no -march=native.)
bash bench/peers/_venv.sh llamacpp-server -- -c 'import llama_cpp.server'
export SEALONG_OPENAI_SERVER_PYTHON="${PEERS_VENV_DIR:-$HOME/.cache/peers-venv}/llamacpp-server/bin/python"
cargo test --workspace --locked "$@"
# The web crate's tests inside headless Chromium (a Web Worker, WebGPU on SwiftShader).
bash web/test.sh
