#!/usr/bin/env bash
# The test suite. Needs the default models in the cache (`sealong models fetch`, which
# .ci/run does) and, for the wgpu tests, a Vulkan driver (lavapipe: mesa-vulkan-drivers).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
