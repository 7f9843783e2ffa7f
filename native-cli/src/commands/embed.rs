//! `sealong embed`: sentence embeddings of a JSONL field with the MBR encoder. JSONL output is
//! one `{id, embedding}` (or `{id, embeddings}` for a list field) per record, appended and
//! resumed by id; `.npy` output is one `[texts, dim]` f32 matrix written at the end.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use sealong::data::jsonl::{self, Appender};
use sealong::models::encoder::SentenceEmbedder;
use serde_json::{Value, json};

use crate::args::DeviceArgs;
use crate::commands::subem::predictions;
use crate::provision::DEFAULT_EMBEDDER;
use crate::{progress, provision};

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

pub fn run(args: EmbedArgs) -> Result<()> {
    if args.out == args.input {
        bail!("--out must differ from --input");
    }
    let lines = jsonl::read::<Value>(&args.input)?;
    let mut records = Vec::with_capacity(lines.len());
    for l in &lines {
        let where_ = format!("{}:{}", args.input.display(), l.line);
        let v = l
            .value
            .get(&args.field)
            .ok_or_else(|| anyhow::anyhow!("{where_}: no {:?} field (set --field)", args.field))?;
        let (texts, is_list) = predictions(v)
            .ok_or_else(|| anyhow::anyhow!("{where_}: {:?} must be a string or a list of strings", args.field))?;
        let id = jsonl::id_string(&l.value, &args.id_field).unwrap_or_else(|| format!("line{}", l.line));
        records.push((id, texts, is_list));
    }
    let dir = provision::resolve_model(&args.model)?;
    let npy = args.out.extension().is_some_and(|e| e == "npy");
    let done = if npy {
        Default::default()
    } else {
        jsonl::existing_ids(&args.out, "id")?
    };
    if !npy {
        // The `.npy` matrix is written whole at the end (no resume), so only JSONL has a sidecar.
        let settings = crate::resume::settings([
            ("embedder_sha256", json!(crate::resume::model_sha256(&args.model)?)),
            ("field", json!(args.field)),
            ("id_field", json!(args.id_field)),
        ]);
        crate::resume::check(&args.out, "embed", &settings, !done.is_empty())?;
    }
    let todo: Vec<_> = records.iter().filter(|r| !done.contains(&r.0)).collect();
    if todo.is_empty() {
        errln!("{}: every record is already embedded", args.out.display());
        return Ok(());
    }
    let device = crate::device::select(args.device.device)?;
    let on = (!sealong::nn::linear::is_host_cpu(&device)).then_some(&device);
    let e =
        SentenceEmbedder::load_dir_on(&dir, on).with_context(|| format!("loading the embedder {}", dir.display()))?;
    let bar = progress::bar(todo.len() as u64, "records");
    if npy {
        let mut all = Vec::new();
        for (_, texts, _) in &todo {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            all.extend(e.embed(&refs)?);
            bar.inc(1);
        }
        bar.finish();
        write_npy(&args.out, &all, e.dim())?;
    } else {
        let mut out = Appender::open(&args.out)?;
        for (id, texts, is_list) in todo {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let v = e.embed(&refs)?;
            if *is_list {
                out.append(&json!({"id": id, "embeddings": v}))?;
            } else {
                out.append(&json!({"id": id, "embedding": v[0]}))?;
            }
            bar.inc(1);
        }
        out.sync()?;
        bar.finish();
    }
    errln!("wrote {} ({} dims)", args.out.display(), e.dim());
    Ok(())
}

/// A little-endian f32 `.npy` (format 1.0) of `rows x dim`, written to a temporary file and
/// renamed so an interrupted run leaves no partial matrix.
fn write_npy(path: &Path, rows: &[Vec<f32>], dim: usize) -> Result<()> {
    let header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dim}), }}",
        rows.len()
    );
    let total = 10 + header.len() + 1;
    let pad = (64 - total % 64) % 64;
    let mut bytes = Vec::with_capacity(total + pad + rows.len() * dim * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&((header.len() + pad + 1) as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(b' ', pad));
    bytes.push(b'\n');
    for r in rows {
        for x in r {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(sealong::files::write_atomic(path, &bytes)?)
}
