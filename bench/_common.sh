# Shared set-up of the bench/*.sh scripts (sourced, not run): `bench_setup OUT` makes OUT,
# builds the `sealong` binary (the dev profile builds the core and every dependency at
# opt-level 3, see Cargo.toml, so benchmarks share the test build), sets $SEALONG to it
# (honouring CARGO_TARGET_DIR), and writes the shared corpus to OUT/corpus.txt.
bench_setup() {
  local out=$1
  mkdir -p "$out"
  # --workspace, not -p sealong-cli: one package alone resolves other features and rebuilds
  # burn's whole graph (see .ci/run).
  cargo build -q --workspace --bins
  SEALONG=./target/debug/sealong
  [ -n "${CARGO_TARGET_DIR:-}" ] && SEALONG="$CARGO_TARGET_DIR/debug/sealong"
  python3 bench/peers/_peers.py > "$out/corpus.txt"
}
