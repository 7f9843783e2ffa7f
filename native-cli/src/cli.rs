//! The `sealong` command line as clap parses it (`Cli`, one `Command` variant per command, each
//! holding the Args its command module owns) and the dispatch to the commands. The top of the
//! crate's import order (ARCHITECTURE.md, "native-cli"): it imports the commands, none of them
//! imports it; `sealong run` gets [`run_line`] handed in to run its stages.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::commands::{
    bench, embed, eval, generate, models, report, run as run_cmd, sample, score, study, subem, synth, tokenize, train,
    view,
};

#[derive(Debug, Parser)]
#[command(
    name = "sealong",
    version,
    about = "SEALONG: a language model improves its own long-context reasoning (sample, MBR-score, fine-tune, evaluate)",
    propagate_version = true
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, list or verify the embedded default models.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Print a model's token ids for a text or a chat prompt.
    Tokenize(tokenize::TokenizeArgs),
    /// Build long-context questions (LongBench schema) from MuSiQue / HotpotQA / 2Wiki records.
    Synth(synth::SynthArgs),
    /// Add SubEM to every record of a predictions file and print the mean x 100.
    Subem(subem::SubemArgs),
    /// Generate one answer (greedy by default) for a prompt or for each question of a file.
    Generate(generate::GenerateArgs),
    /// Sample N answers per question (SEALONG stage 2), resumable.
    Sample(sample::SampleArgs),
    /// MBR-score each question's samples and pick chosen / rejected (stage 3), resumable.
    Score(score::ScoreArgs),
    /// Sentence embeddings of a JSONL field (the MBR encoder), resumable.
    Embed(embed::EmbedArgs),
    /// Fine-tune on pairs (ORPO or SFT, LoRA or full) with SEALONG's recipe; resumable.
    Train(Box<train::TrainArgs>),
    /// Evaluate on LongBench-style files: greedy SubEM per task, MBR@N / random@N / oracle@N.
    Eval(Box<eval::EvalArgs>),
    /// One whole SEALONG round from a TOML config: synth, sample, score, eval, train, eval, report.
    Run(run_cmd::RunArgs),
    /// The paper's studies from eval outputs (n: oracle@k and MBR@k; scorers; prompts), with
    /// bootstrap intervals: study.json, study.md and study.html.
    #[command(subcommand)]
    Study(study::StudyCommand),
    /// Write a self-contained HTML report (plots and tables) of a run directory.
    Report(report::ReportArgs),
    /// Measure speed (see BENCHMARKS.md for the peer comparisons).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Show a samples or scored file in the browser: MBR heatmaps and rankings computed in the page.
    View(view::ViewArgs),
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models(c) => models::run(c),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Subem(a) => subem::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Score(a) => score::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(*a),
        Command::Run(a) => run_cmd::run(a, run_line),
        Command::Study(c) => study::run(c),
        Command::Report(a) => report::run(a),
        Command::Bench(c) => bench::run(c),
        Command::View(a) => view::run(a),
    }
}

/// Runs one `sealong` command line in this process.
pub fn run_line(argv: Vec<String>) -> Result<()> {
    let mut full = vec!["sealong".to_string()];
    full.extend(argv);
    let cli = Cli::try_parse_from(&full).with_context(|| format!("internal command line {full:?}"))?;
    run(cli)
}

#[cfg(test)]
mod tests {
    /// Issue 18: `--beta`'s help and the recipe's default read core's one `DEFAULT_BETA`, not
    /// copies of 0.1 that could drift from it.
    #[test]
    fn beta_help_and_default_are_core_s_one_constant() {
        use clap::CommandFactory;
        let mut cli = super::Cli::command();
        let train = cli.find_subcommand_mut("train").expect("train subcommand");
        let beta = train.get_arguments().find(|a| a.get_id() == "beta").expect("--beta");
        let help = beta.get_help().expect("--beta has help").to_string();
        assert_eq!(help, format!("ORPO's beta (default {})", sealong::train::DEFAULT_BETA));
        assert!(help.contains("0.1"), "{help}");
        assert_eq!(
            sealong::train::TrainConfig::default().beta,
            sealong::train::DEFAULT_BETA
        );
    }
}
