//! The `sealong` program (`sealong_cli::main`, exactly what native-cli's binary runs), built by
//! the test package so its integration tests get a fresh copy through `CARGO_BIN_EXE_*` and can
//! run it as an installed binary would run: copied elsewhere, from an unrelated directory.

fn main() -> std::process::ExitCode {
    sealong_cli::main()
}
