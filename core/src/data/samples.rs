//! Stage-2 records (`sample`'s output) as `score`, `view` and `eval` read them: one question
//! with its N sampled answers. The whole JSON object is kept so that later stages add fields
//! and pass everything else through unchanged.

use std::path::Path;

use serde_json::{Map, Value};

use crate::data::jsonl::{self, Line};
use crate::error::{Error, Result};

/// One question's samples.
#[derive(Debug, Clone)]
pub struct SampleSet {
    pub id: String,
    /// The question alone (without context or strategy suffix), when the record has it.
    pub question: Option<String>,
    /// The raw user message (context + question + strategy suffix).
    pub prompt: String,
    /// Gold answers; empty when the record has none.
    pub answers: Vec<String>,
    /// The N answer texts.
    pub texts: Vec<String>,
    /// The record as read.
    pub raw: Map<String, Value>,
}

impl SampleSet {
    /// Reads the fields `score` needs from a parsed record; errors name `path:line`.
    pub fn from_value(v: Value, path: &Path, line: usize) -> Result<Self> {
        let err = |m: String| Error::record(path, line, m);
        let Value::Object(raw) = v else {
            return Err(err("expected a JSON object".into()));
        };
        let id = jsonl::id_string(&Value::Object(raw.clone()), "id")
            .ok_or_else(|| err("record has no \"id\" (string or number)".into()))?;
        let prompt = raw
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("record {id:?} has no \"prompt\" string")))?
            .to_string();
        let question = raw.get("question").and_then(Value::as_str).map(str::to_string);
        let answers = match raw.get("answers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("record {id:?}: \"answers\" must hold strings")))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(err(format!("record {id:?}: \"answers\" must be a string or a list"))),
        };
        let samples = raw
            .get("samples")
            .and_then(Value::as_array)
            .ok_or_else(|| err(format!("record {id:?} has no \"samples\" list")))?;
        let texts = samples
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(t) => Ok(t.clone()),
                Value::Object(o) => o
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| err(format!("record {id:?}: sample {i} has no \"text\" string"))),
                _ => Err(err(format!(
                    "record {id:?}: sample {i} is neither a string nor an object"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SampleSet {
            id,
            question,
            prompt,
            answers,
            texts,
            raw,
        })
    }

    /// The long context inside the prompt: SEALONG's user message is
    /// `"\n" + context + "\n\n" + question + "\n" + suffix`, so the context ends at the last
    /// `"\n\n" + question`.
    pub fn context(&self) -> Option<&str> {
        let q = self.question.as_deref()?;
        let at = self.prompt.rfind(&format!("\n\n{q}"))?;
        Some(self.prompt[..at].strip_prefix('\n').unwrap_or(&self.prompt[..at]))
    }
}

/// Reads a samples (or scored) file.
pub fn read(path: &Path) -> Result<Vec<Line<SampleSet>>> {
    let lines: Vec<Line<Value>> = jsonl::read(path)?;
    lines
        .into_iter()
        .map(|l| {
            Ok(Line {
                line: l.line,
                value: SampleSet::from_value(l.value, path, l.line)?,
            })
        })
        .collect()
}
