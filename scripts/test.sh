#!/usr/bin/env bash
# The test suite. Needs the default models in the cache (`sealong models fetch`, which
# .ci/run does), for the wgpu tests a Vulkan driver (lavapipe: mesa-vulkan-drivers), and for the
# browser tests Debian's chromium + chromium-driver. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The page's wasm, which the browser end-to-end test serves (seconds when nothing changed).
bash web/build.sh
cargo test --workspace --locked "$@"
# The web crate's tests inside headless Chromium (a Web Worker, WebGPU on SwiftShader).
bash web/test.sh
