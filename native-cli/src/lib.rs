//! The `sealong` command line: argument parsing, files, progress and model provisioning around
//! the core library. Only this crate knows clap, the terminal, the process environment and pip.
//! Output goes through [`output`] (`outln!`, `errln!`), which a closed pipe cannot panic.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
pub mod output;

pub mod args;
pub mod commands;
pub mod device;
pub mod openai;
pub mod pool;
pub mod progress;
pub mod provision;
pub mod resume;

use anyhow::Result;

/// Runs one parsed command.
pub fn run(cli: args::Cli) -> Result<()> {
    use args::Command;
    match cli.command {
        Command::Models(c) => commands::models::run(c),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Synth(a) => commands::synth::run(a),
        Command::Subem(a) => commands::subem::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Sample(a) => commands::sample::run(a),
        Command::Score(a) => commands::score::run(a),
        Command::Embed(a) => commands::embed::run(a),
        Command::Train(a) => commands::train::run(*a),
        Command::Eval(a) => commands::eval::run(*a),
        Command::Run(a) => commands::run::run(a),
        Command::Report(a) => commands::report::run(a),
        Command::Bench(c) => commands::bench::run(c),
        Command::View(a) => commands::view::run(a),
    }
}
