//! A samples or scored JSONL file as the page shows it: every good record with what the page
//! needs (question, context, gold answers, the N answers, SubEM, the native scores of a scored
//! file) and every bad line as an error naming the file and line. Unlike `sealong score`, one bad
//! line does not hide the rest: a viewer shows what it can and lists what it could not read.

use std::collections::HashSet;
use std::path::Path;

use sealong::data::jsonl;
use sealong::data::samples::SampleSet;
use sealong::eval::sub_em;
use sealong::mbr::long_text::LongText;
use serde::Serialize;
use serde_json::Value;

/// One question of the file.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// 1-based line in the file.
    pub line: usize,
    pub id: String,
    pub question: Option<String>,
    /// The long context cut out of the prompt (when the record names its question).
    pub context: Option<String>,
    pub prompt: String,
    /// Gold answers (empty when the record has none).
    pub answers: Vec<String>,
    /// The N sampled answers.
    pub texts: Vec<String>,
    /// SubEM of each answer against the gold answers (core's metric), when there are golds.
    pub sub_em: Option<Vec<bool>>,
    /// What `sealong score` wrote into a scored file.
    pub native: Option<NativeScores>,
    /// How the page reads answers longer than the embedder's window (`truncate`, `windowed` or
    /// `answer-span`): the scored file's own `long_text`, so the page compares like for like,
    /// else `sealong score`'s default.
    pub long_text: &'static str,
}

/// The scores a scored file carries (stage 3's fields).
#[derive(Debug, Clone, Serialize)]
pub struct NativeScores {
    /// `embedding`, `rouge-l`, `self-eval`, ... (`null` in the file reads as "unknown").
    pub method: String,
    pub scores: Vec<f64>,
    pub chosen: usize,
    pub rejected: Option<usize>,
    pub rejected_pool: Option<Vec<usize>>,
    /// The embedder named in the record (embedding method).
    pub embedder: Option<String>,
}

/// A line the page could not use.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    /// The whole message, starting with `file:line:` as the CLI prints it.
    pub message: String,
}

/// A parsed file.
#[derive(Debug, Clone, Serialize)]
pub struct ParsedFile {
    pub name: String,
    pub records: Vec<Record>,
    pub errors: Vec<LineError>,
}

/// Parses `text` (named `name` in messages). Blank lines are skipped as the CLI skips them; a
/// file with no record at all gets an error of its own (line 0).
pub fn parse(text: &str, name: &str) -> ParsedFile {
    let path = Path::new(name);
    let mut records = Vec::new();
    let mut errors = Vec::new();
    let mut ids = HashSet::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            continue;
        }
        match record(raw, path, line) {
            Ok(r) if !ids.insert(r.id.clone()) => errors.push(LineError {
                line,
                message: format!("{name}:{line}: id {:?} appears twice", r.id),
            }),
            Ok(r) => records.push(r),
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    if records.is_empty() && errors.is_empty() {
        errors.push(LineError {
            line: 0,
            message: format!("{name}: the file has no records"),
        });
    }
    ParsedFile {
        name: name.to_string(),
        records,
        errors,
    }
}

fn record(raw: &str, path: &Path, line: usize) -> Result<Record, String> {
    let value: Value = jsonl::parse_line(raw.as_bytes(), path, line).map_err(|e| e.to_string())?;
    let set = SampleSet::from_value(value, path, line).map_err(|e| e.to_string())?;
    let here = |m: String| format!("{}:{line}: record {:?}: {m}", path.display(), set.id);
    let n = set.texts.len();
    if n < 2 {
        // The same rule as `sealong score`: MBR needs a chosen and a rejected answer.
        return Err(here(format!("has {n} sample(s); MBR needs at least 2")));
    }
    let native = native_scores(&set, n).map_err(here)?;
    let long_text = match set.raw.get("long_text") {
        None | Some(Value::Null) => LongText::default(),
        Some(Value::String(name)) => LongText::from_name(name).map_err(|e| here(format!("\"long_text\": {e}")))?,
        Some(v) => return Err(here(format!("\"long_text\" is not a name: {v}"))),
    }
    .name();
    let sub_em = (!set.answers.is_empty()).then(|| set.texts.iter().map(|t| sub_em(t, &set.answers)).collect());
    Ok(Record {
        line,
        context: set.context().map(str::to_string),
        id: set.id,
        question: set.question,
        prompt: set.prompt,
        answers: set.answers,
        texts: set.texts,
        sub_em,
        native,
        long_text,
    })
}

/// A scored file's fields, checked against the record's N so the page never indexes out of
/// range. A record without `scores` is a plain samples record (`None`).
fn native_scores(set: &SampleSet, n: usize) -> Result<Option<NativeScores>, String> {
    let Some(scores) = set.raw.get("scores") else {
        return Ok(None);
    };
    let scores: Vec<f64> = scores
        .as_array()
        .ok_or("\"scores\" is not a list")?
        .iter()
        .map(|v| v.as_f64().ok_or("\"scores\" holds a non-number"))
        .collect::<Result<_, _>>()?;
    if scores.len() != n {
        return Err(format!("\"scores\" has {} values for {n} samples", scores.len()));
    }
    let index = |key: &str| -> Result<Option<usize>, String> {
        match set.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(i) if (i as usize) < n => Ok(Some(i as usize)),
                _ => Err(format!("\"{key}\" is not a sample index below {n}: {v}")),
            },
        }
    };
    let chosen = index("chosen")?.ok_or("a scored record needs \"chosen\"")?;
    let rejected = index("rejected")?;
    let rejected_pool = match set.raw.get("rejected_pool") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_array()
                .ok_or("\"rejected_pool\" is not a list")?
                .iter()
                .map(|x| match x.as_u64() {
                    Some(i) if (i as usize) < n => Ok(i as usize),
                    _ => Err(format!("\"rejected_pool\" holds {x}, not a sample index below {n}")),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Some(NativeScores {
        method: set
            .raw
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        scores,
        chosen,
        rejected,
        rejected_pool,
        embedder: set.raw.get("embedder").and_then(Value::as_str).map(str::to_string),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: &str, texts: &[&str]) -> Value {
        json!({"id": id, "question": "Who?", "answers": ["Ada"],
               "prompt": "\nPassage 1:\nCtx <b>.\n\nWho?\nThink.", "samples": texts})
    }

    #[test]
    fn good_records_bad_lines_and_native_scores() {
        let mut scored = rec("s", &["Ada did", "Bob", "Ada"]);
        scored["method"] = json!("embedding");
        scored["scores"] = json!([0.9, 0.1, 0.8]);
        scored["chosen"] = json!(0);
        scored["rejected"] = json!(1);
        scored["rejected_pool"] = json!([1]);
        let mut bad_scores = rec("b", &["x", "y"]);
        bad_scores["scores"] = json!([1.0]);
        bad_scores["chosen"] = json!(0);
        let text = format!(
            "{}\n\n{{not json\n{}\n{}\n{}\n{}\n",
            rec("a", &["Ada", "Bob"]),
            scored,
            rec("a", &["again", "dup"]),
            rec("one", &["only"]),
            bad_scores
        );
        let f = parse(&text, "data.jsonl");
        let ids: Vec<_> = f.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "s"]);
        assert_eq!(f.records[0].line, 1);
        assert_eq!(f.records[0].sub_em, Some(vec![true, false]));
        assert_eq!(f.records[0].context.as_deref(), Some("Passage 1:\nCtx <b>."));
        let n = f.records[1].native.as_ref().expect("native");
        assert_eq!((n.chosen, n.rejected, n.method.as_str()), (0, Some(1), "embedding"));
        let lines: Vec<usize> = f.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 5, 6, 7], "{:?}", f.errors);
        assert!(
            f.errors[0].message.starts_with("data.jsonl:3: malformed JSON"),
            "{:?}",
            f.errors[0]
        );
        assert!(f.errors[1].message.contains("appears twice"));
        assert!(f.errors[2].message.contains("at least 2"));
        assert!(f.errors[3].message.contains("\"scores\" has 1 values for 2 samples"));
    }

    #[test]
    fn the_page_reads_long_answers_as_the_file_was_scored() {
        let mut spans = rec("s", &["Ada", "Bob"]);
        spans["long_text"] = json!("answer-span");
        let mut unknown = rec("u", &["Ada", "Bob"]);
        unknown["long_text"] = json!("head");
        let text = format!("{}\n{}\n{}\n", rec("a", &["Ada", "Bob"]), spans, unknown);
        let f = parse(&text, "scored.jsonl");
        let readings: Vec<_> = f.records.iter().map(|r| r.long_text).collect();
        assert_eq!(readings, ["windowed", "answer-span"]);
        assert_eq!(f.errors.len(), 1);
        let m = &f.errors[0].message;
        assert!(
            m.starts_with("scored.jsonl:3:") && m.contains("\"long_text\"") && m.contains("windowed"),
            "{m}"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        let f = parse("\n \n", "e.jsonl");
        assert!(f.records.is_empty());
        assert_eq!(f.errors[0].message, "e.jsonl: the file has no records");
    }
}
