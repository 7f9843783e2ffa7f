#!/usr/bin/env bash
# Issue 17: fuzz every parser of outside input (tests/tests/fuzz: GGUF, safetensors and their
# index, config.json, tokenizer.json, tokenizer_config.json, chat templates, PEFT adapter configs,
# TOML recipes and run configs, every JSONL reader, run files, OpenAI-compatible responses).
# The bar: no panic, no abort, no parse peaking above its parser's stated heap bound.
#
#   bash scripts/fuzz.sh                 # 100,000 cases per parser
#   bash scripts/fuzz.sh 20000 gguf      # fewer cases, only tests whose name contains "gguf"
#
# CI runs the same tests with 2,000 cases each (the default of SEALONG_FUZZ_CASES). Results go to
# bench/results/fuzz_<date>.tsv, one line per parser: cases, how many parsed / were rejected,
# panics, over-bound cases, the largest peak heap and its input's size, wall seconds, the bound.
# A failing input is kept under $CARGO_TARGET_DIR/tmp/fuzz-failures/.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
filter="${2:-targets::}"
seed="${SEALONG_FUZZ_SEED:-}"
out="bench/results/fuzz_$(date -u +%Y-%m-%d).tsv"
mkdir -p bench/results
start=$(date +%s)
printf '# %s  cases=%s seed=%s  %s on %s cores\n' "$(date -u +%FT%TZ)" "$cases" "${seed:-default}" \
  "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$(nproc)" >> "$out"
printf 'parser\tcases\tparsed\trejected\tpanics\tover_bound\tmax_peak_bytes\tits_input_bytes\tseconds\tbound\n' >> "$out"
cargo test -p sealong-tests --test fuzz --locked --no-run
# One process per parser, two at a time (a parser per core; each is measured on its own
# thread): an abort in one parser does not lose the others. Each parser's line is appended as
# it finishes, so a run cut short keeps what it did.
export SEALONG_FUZZ_CASES="$cases" SEALONG_FUZZ_RESULTS="$PWD/$out"
if [ -n "$seed" ]; then export SEALONG_FUZZ_SEED="$seed"; fi
status=0
mkdir -p "${CARGO_TARGET_DIR:-target}/tmp"
cargo test -p sealong-tests --test fuzz --locked -q -- --list 2>/dev/null | sed -n 's/: test$//p' \
  | grep -- "$filter" | grep -v 'cases_are_reproducible\|json_value_size' \
  | xargs -P "${FUZZ_THREADS:-2}" -I{} sh -c \
    'cargo test -q -p sealong-tests --test fuzz --locked -- --exact {} >/dev/null 2>"$0/fuzz-{}.log" \
       || { echo "# {} FAILED (see $0/fuzz-{}.log)" >> "$SEALONG_FUZZ_RESULTS"; exit 1; }' \
    "${CARGO_TARGET_DIR:-target}/tmp" || status=$?
printf '# total %ss\n' "$(( $(date +%s) - start ))" >> "$out"
column -t -s $'\t' < "$out" | tail -n 30
echo "appended to $out"
exit "$status"
