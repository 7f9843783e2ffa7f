#!/usr/bin/env bash
# The web crate's tests in headless Chromium: wasm-bindgen-test-runner serves the test wasm and
# drives Debian's chromium through chromedriver; the tests run in a dedicated Web Worker (as the
# page's worker does) with WebGPU on Chromium's SwiftShader adapter (web/tests/webdriver.json).
# The `wasm` profile and the `webgpu` feature: the WebGPU module's build (web/build.sh's
# pkg-gpu), so the dependencies are the ones web/build.sh already compiled (without the feature
# at this profile, cargo would overwrite that build's sealong_web.wasm). The tests cover the CPU
# engine too; the page's CPU module itself is tested in the browser by web_e2e.
# Needs: wasm-bindgen-cli of Cargo.lock's version (web/build.sh installs it), chromium and
# chromium-driver (apt-get install chromium chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
export WASM_BINDGEN_TEST_WEBDRIVER_JSON=$PWD/web/tests/webdriver.json
# SwiftShader compiles each WGSL kernel on the CPU; the default 20 s per test is too short.
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-300}
export WASM_BINDGEN_TEST_DRIVER_TIMEOUT=${WASM_BINDGEN_TEST_DRIVER_TIMEOUT:-60}
cargo test -p sealong-web --target wasm32-unknown-unknown --profile wasm --features webgpu --locked "$@"
