#!/usr/bin/env bash
# Builds the browser page's two WebAssembly modules from the sealong-web crate for wasm32, then
# wasm-bindgen's ES-module glue of each (both gitignored):
# - web/www/pkg: the CPU module (default features, profile `wasm-cpu`): parsing, ROUGE-L, chrF,
#   the CPU engine and burn flex. The page loads it first; its first results wait for nothing else.
# - web/www/pkg-gpu: the WebGPU module (feature `webgpu`, profile `wasm`): the same plus
#   burn-wgpu and cubecl, which the page's worker imports only to run the encoder on WebGPU.
# Both profiles are sized for download, fat LTO (Cargo.toml; the release profile stays the
# native benchmarks'); two profiles because cargo would overwrite one feature set's
# sealong_web.wasm with the other's at one profile. No wasm-opt: after wasm-bindgen, Debian's
# binaryen (108) output fails in Chromium ("WebAssembly.Table.set(): Argument 1 is invalid for
# table"); before it, it works but costs minutes of build (BENCHMARKS.md).
# `sealong` embeds web/www when it compiles (native-cli/build.rs), so build this before sealong,
# or rebuild sealong after it.
# Idempotent: installs wasm-bindgen-cli only when the installed one is not Cargo.lock's version
# (the CLI and the crate must match exactly), and a second run with nothing changed takes
# seconds. The name section is dropped: 8 MB of function names the page does not need (a
# panic's message still reaches the page through the panic hook).
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$want" ]; then
  echo "web/build.sh: no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (the version Cargo.lock pins)"
  # --locked first (wasm-bindgen-cli's own lock file); if the registry no longer has one of
  # those exact versions, a fresh resolution of the same wasm-bindgen-cli release.
  # Built for build time, not speed (opt-level 1, many codegen units, no LTO): it runs for
  # seconds on one wasm file, and a cold install at the release profile took minutes of CI.
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true
  cargo install wasm-bindgen-cli --version "$want" --locked || cargo install wasm-bindgen-cli --version "$want"
  unset CARGO_PROFILE_RELEASE_OPT_LEVEL CARGO_PROFILE_RELEASE_CODEGEN_UNITS CARGO_PROFILE_RELEASE_LTO \
    CARGO_PROFILE_RELEASE_DEBUG CARGO_PROFILE_RELEASE_STRIP
fi
rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown

target_dir=${CARGO_TARGET_DIR:-target}

# build PROFILE OUT [CARGO FEATURE ARGS...]: one module into web/www/OUT.
build() {
  local profile=$1 out=web/www/$2
  shift 2
  cargo build -p sealong-web --target wasm32-unknown-unknown --profile "$profile" --locked "$@"
  # A custom profile's output directory is named after it.
  local wasm="$target_dir/wasm32-unknown-unknown/$profile/sealong_web.wasm"
  if [ ! -f "$out/sealong_web_bg.wasm" ] || [ ! -f "$out/sealong_web.js" ] || [ "$wasm" -nt "$out/sealong_web_bg.wasm" ]; then
    wasm-bindgen --target web --no-typescript --remove-name-section --out-dir "$out" "$wasm"
  fi
  echo "web/build.sh: $(stat -c %s "$out/sealong_web_bg.wasm") bytes $out/sealong_web_bg.wasm"
}

build wasm-cpu pkg
build wasm pkg-gpu --features webgpu
