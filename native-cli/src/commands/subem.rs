//! `sealong subem`: SubEM on any predictions file; writes each record with `sub_em` added and
//! prints the mean x 100, per dataset and averaged when records carry a `dataset` field.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use sealong::data::jsonl;
use sealong::eval::sub_em;
use serde_json::{Value, json};

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

/// Gold answers from a field: a string, a list of strings, or a list of lists (flattened, as
/// `drqa_metric_max_over_ground_truths` does).
fn golds(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => {
            let mut out = Vec::new();
            for it in items {
                out.extend(golds(it)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// Texts from a field: a string, or a list of strings / `{text}` samples (`true` for a list).
/// `subem` reads predictions this way and `embed` the texts to embed.
pub(crate) fn predictions(v: &Value) -> Option<(Vec<String>, bool)> {
    match v {
        Value::String(s) => Some((vec![s.clone()], false)),
        Value::Array(items) => items
            .iter()
            .map(|it| match it {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| (v, true)),
        _ => None,
    }
}

/// `input` with `.jsonl` replaced by `suffix` (e.g. `.subem.jsonl`).
pub(crate) fn with_suffix(input: &Path, suffix: &str) -> PathBuf {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    input.with_file_name(format!("{stem}{suffix}"))
}

pub fn run(args: SubemArgs) -> Result<()> {
    let lines = jsonl::read::<Value>(&args.input)?;
    let out_path = args
        .out
        .clone()
        .unwrap_or_else(|| with_suffix(&args.input, ".subem.jsonl"));
    let to_stdout = out_path.as_os_str() == "-";
    if !to_stdout && out_path == args.input {
        bail!("--out must differ from --input (the input would be overwritten)");
    }
    // (sum, count) per dataset; "" when records have no dataset field.
    let mut per: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut records = Vec::with_capacity(lines.len());
    for l in lines {
        let mut rec = l.value;
        let where_ = format!("{}:{}", args.input.display(), l.line);
        let pred = rec
            .get(&args.pred_field)
            .ok_or_else(|| anyhow::anyhow!("{where_}: no {:?} field (set --pred-field)", args.pred_field))?;
        let (preds, is_list) = predictions(pred).ok_or_else(|| {
            anyhow::anyhow!(
                "{where_}: {:?} must be a string or a list of strings/samples",
                args.pred_field
            )
        })?;
        let gold_v = rec
            .get(&args.gold_field)
            .ok_or_else(|| anyhow::anyhow!("{where_}: no {:?} field (set --gold-field)", args.gold_field))?;
        let gold = golds(gold_v)
            .ok_or_else(|| anyhow::anyhow!("{where_}: {:?} must be a string or a list of strings", args.gold_field))?;
        let scores: Vec<bool> = preds.iter().map(|p| sub_em(p, &gold)).collect();
        let mean = scores.iter().filter(|&&s| s).count() as f64 / scores.len().max(1) as f64;
        let dataset = rec.get("dataset").and_then(Value::as_str).unwrap_or("").to_string();
        let e = per.entry(dataset).or_default();
        e.0 += mean;
        e.1 += 1;
        rec["sub_em"] = if is_list { json!(scores) } else { json!(scores[0]) };
        records.push(rec);
    }
    let write = |w: &mut dyn Write| -> Result<()> {
        for r in &records {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    };
    if to_stdout {
        write(&mut crate::output::Stdout)?;
    } else {
        // Written whole: the output is never half written.
        sealong::files::write_atomic_with(&out_path, |w| {
            write(w).map_err(|e| sealong::Error::Invalid(format!("writing {}: {e:#}", out_path.display())))
        })?;
    }
    let mut summary = serde_json::Map::new();
    let mut task_means = Vec::new();
    for (ds, (sum, n)) in &per {
        let m = 100.0 * sum / *n as f64;
        task_means.push(m);
        let name = if ds.is_empty() { "all" } else { ds.as_str() };
        summary.insert(name.to_string(), json!({"sub_em": m, "num_samples": n}));
    }
    let avg = task_means.iter().sum::<f64>() / task_means.len().max(1) as f64;
    summary.insert("avg".into(), json!(avg));
    let mut report = std::io::stderr().lock();
    let mut console: Box<dyn Write> = if to_stdout {
        Box::new(&mut report)
    } else {
        Box::new(crate::output::Stdout)
    };
    if per.len() > 1 {
        for (ds, (sum, n)) in &per {
            writeln!(
                console,
                "{:<20} SubEM {:6.2}  (n = {n})",
                if ds.is_empty() { "(none)" } else { ds },
                100.0 * sum / *n as f64
            )?;
        }
        writeln!(
            console,
            "{:<20} SubEM {avg:6.2}  (unweighted mean of {} tasks)",
            "avg",
            per.len()
        )?;
    } else {
        let n: usize = per.values().map(|v| v.1).sum();
        writeln!(console, "SubEM {avg:.2}  (n = {n})")?;
    }
    if !to_stdout {
        writeln!(console, "wrote {}", out_path.display())?;
    }
    if let Some(m) = &args.metrics {
        sealong::files::write_atomic(
            m,
            (serde_json::to_string_pretty(&Value::Object(summary))? + "\n").as_bytes(),
        )?;
    }
    Ok(())
}
