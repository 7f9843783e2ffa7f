#!/usr/bin/env bash
# Time to the first MBR result in headless Chromium (issue 18): a fresh browser loads the page
# served by `sealong view` with the golden samples file and the page's marks give ms since
# navigation to its first ROUGE-L and first embedding result, median of LOADS loads, on WebGPU
# (SwiftShader) and on the CPU engine. Also prints the modules' sizes and the load average.
#   bash bench/page_load.sh [WWW_DIR] [LOADS]
# WWW_DIR: a page directory with its pkg/ (default: the page embedded in the test binary, i.e.
# web/www as `bash web/build.sh` left it). Copy web/www aside before a rebuild to compare two
# builds in one session. Needs chromium and chromium-driver, like tests/tests/suite/web_e2e.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
WWW=${1:-}
export SEALONG_PAGE_LOADS=${2:-3}
if [ -n "$WWW" ]; then
  export SEALONG_WWW=$(cd "$WWW" && pwd)
  www=$SEALONG_WWW
else
  www=web/www
fi
# The page's modules (web/build.sh): pkg/ the CPU module, pkg-gpu/ the WebGPU one (a build from
# before the split has pkg/ only, the one module).
for m in pkg pkg-gpu; do
  wasm="$www/$m/sealong_web_bg.wasm"
  if [ -f "$wasm" ]; then
    echo "$m: $(stat -c %s "$wasm") bytes, $(gzip -9 -c "$wasm" | wc -c) gzipped ($wasm)"
  fi
done
echo "$(uptime)"
cargo test -q -p sealong-tests --test suite -- --ignored --exact web_e2e::time_to_first_mbr_result \
  --nocapture 2>&1 | grep -E "time to first|load [0-9]+:|panicked|error"
