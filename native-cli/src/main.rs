//! `sealong`: the program is `sealong_cli::main` (the test package builds the same one).

fn main() -> std::process::ExitCode {
    sealong_cli::main()
}
