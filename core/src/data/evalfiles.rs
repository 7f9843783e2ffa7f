//! Evaluation files as users have them, read into one question type:
//!
//! - **LongBench** (`{_id, input, context, answers, dataset?, ...}`, JSONL): real LongBench files
//!   and `sealong synth --eval` output; answers scored by SubEM.
//! - **L-Eval** (`{instructions: [..], outputs: [..], input, ...}`, JSONL, OpenLMLab/LEval's
//!   `LEval-data/*/*.jsonl`): each (instruction, output) pair is one question over the long
//!   `input`. An output that is one option letter (`C`, `(C)`; the instruction lists the options)
//!   is scored as multiple choice (the letter extracted as for LongBench-v2); any other output is
//!   the gold answer for SubEM. Several letters (`ABD`, L-Eval's multiple-answer questions, which
//!   its exam metric scores with partial credit) are refused: that metric is not implemented.
//! - **LongBench-v2** multiple choice (`{_id, domain, sub_domain, difficulty, length, question,
//!   choice_A..choice_D, answer: "A".."D", context}`, JSONL or the JSON array of its `data.json`);
//!   scored by accuracy on the extracted letter.
//! - **GSM8K** (`{question, answer}`, JSONL, openai/grade-school-math's `test.jsonl`; the answer is
//!   a worked solution ending in `#### N`); no context, scored by the numeric final answer.
//!
//! The format is detected per file from its first record ([`detect`]) or named by the caller.
//! Every error names the file and the line (or, in a JSON array, the record) and the field.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::data::jsonl;
use crate::data::records::LongBenchRecord;
use crate::error::{Error, Result};
use crate::text::{Strategy, prompts};

/// The schema of an evaluation file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvalFormat {
    LongBench,
    LEval,
    LongBenchV2,
    Gsm8k,
}

impl EvalFormat {
    pub const ALL: [EvalFormat; 4] = [
        EvalFormat::LongBench,
        EvalFormat::LEval,
        EvalFormat::LongBenchV2,
        EvalFormat::Gsm8k,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EvalFormat::LongBench => "longbench",
            EvalFormat::LEval => "leval",
            EvalFormat::LongBenchV2 => "longbench-v2",
            EvalFormat::Gsm8k => "gsm8k",
        }
    }

    /// How this format's answers are scored.
    pub fn answer_kind(self) -> AnswerKind {
        match self {
            EvalFormat::LongBench | EvalFormat::LEval => AnswerKind::Text,
            EvalFormat::LongBenchV2 => AnswerKind::Choice,
            EvalFormat::Gsm8k => AnswerKind::Number,
        }
    }
}

impl fmt::Display for EvalFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EvalFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        EvalFormat::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<_> = EvalFormat::ALL.iter().map(|f| f.name()).collect();
            Error::Invalid(format!(
                "unknown evaluation format {s:?} (expected one of: {})",
                names.join(", ")
            ))
        })
    }
}

/// What a question's gold answers are, and so which metric scores a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerKind {
    /// Free text: SubEM against any of the answers.
    Text,
    /// A letter `A`..`D`: accuracy of the letter extracted from the output.
    Choice,
    /// A number (commas removed, as a decimal string): the output's last number compared
    /// numerically.
    Number,
}

impl AnswerKind {
    /// The metric's name as predictions record it.
    pub fn metric_name(self) -> &'static str {
        match self {
            AnswerKind::Text => "sub_em",
            AnswerKind::Choice => "choice_accuracy",
            AnswerKind::Number => "numeric_final_answer",
        }
    }
}

/// One question of an evaluation file, whatever its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalQuestion {
    pub id: String,
    /// The task name the file gives (LongBench's `dataset`; `gsm8k`; empty: the caller names it,
    /// e.g. after the file).
    pub dataset: String,
    /// The long-file target of a `synth --eval --target-tokens` record.
    pub target_tokens: Option<usize>,
    /// The document(s) the question is about (empty for GSM8K); shared by the questions of an
    /// L-Eval record, so a record's many instructions do not copy its long input.
    pub context: Arc<str>,
    pub question: String,
    /// The four options of a multiple-choice question (empty otherwise).
    pub choices: Vec<String>,
    /// Gold answers: texts (SubEM), one letter (choice) or one number (numeric).
    pub answers: Vec<String>,
    pub kind: AnswerKind,
}

impl EvalQuestion {
    /// The user message with `context` standing for the question's context (the caller may pass
    /// a middle-truncated one): the SEALONG message with `strategy` for LongBench and L-Eval, a
    /// multiple-choice message for LongBench-v2 and a step-by-step math message for GSM8K (which
    /// have their own answer formats, so `strategy` does not apply).
    pub fn message(&self, context: &str, strategy: Strategy) -> String {
        match self.kind {
            AnswerKind::Text => prompts::user_message(context, &self.question, strategy),
            AnswerKind::Choice => prompts::multiple_choice_message(context, &self.question, &self.choices),
            AnswerKind::Number => prompts::math_message(&self.question),
        }
    }
}

/// Detects a file's format from its first record's fields: `instructions` and `outputs`:
/// L-Eval; `choice_A`: LongBench-v2; `input`, `context` and `answers`: LongBench; `question` and
/// a string `answer` without `context`: GSM8K.
pub fn detect(path: &Path) -> Result<EvalFormat> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    detect_bytes(&bytes, path)
}

fn detect_bytes(bytes: &[u8], path: &Path) -> Result<EvalFormat> {
    let (line, first) = first_record(bytes, path)?;
    let has = |k: &str| first.get(k).is_some();
    let where_ = |msg: String| match line {
        Some(l) => Error::record(path, l, msg),
        None => Error::Invalid(format!("{}: record 1: {msg}", path.display())),
    };
    if has("instructions") && has("outputs") {
        Ok(EvalFormat::LEval)
    } else if has("choice_A") {
        Ok(EvalFormat::LongBenchV2)
    } else if has("input") && has("context") && has("answers") {
        Ok(EvalFormat::LongBench)
    } else if has("question") && first.get("answer").is_some_and(Value::is_string) && !has("context") {
        Ok(EvalFormat::Gsm8k)
    } else {
        let keys: Vec<&str> = first
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        Err(where_(format!(
            "cannot tell the evaluation format from the fields [{}] (expected LongBench `input`/`context`/`answers`, \
             L-Eval `instructions`/`outputs`/`input`, LongBench-v2 `question`/`choice_A`..`choice_D`/`answer`, or \
             GSM8K `question`/`answer`); pass --format",
            keys.join(", ")
        )))
    }
}

/// The first record of a JSONL file (with its line) or of a JSON array (line `None`).
fn first_record(bytes: &[u8], path: &Path) -> Result<(Option<usize>, Value)> {
    if is_json_array(bytes) {
        let all = parse_array::<Value>(bytes, path)?;
        let first = all.into_iter().next().ok_or_else(|| no_records(path))?;
        return Ok((None, first.1));
    }
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        return Ok((Some(i + 1), jsonl::parse_line::<Value>(raw, path, i + 1)?));
    }
    Err(no_records(path))
}

fn no_records(path: &Path) -> Error {
    Error::Invalid(format!("{}: the file has no records", path.display()))
}

fn is_json_array(bytes: &[u8]) -> bool {
    let start = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    start.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Where a record sits: a JSONL line, or an element of a JSON array (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Line(usize),
    Record(usize),
}

impl Place {
    fn error(self, path: &Path, msg: impl Into<String>) -> Error {
        match self {
            Place::Line(l) => Error::record(path, l, msg),
            Place::Record(r) => Error::Invalid(format!("{}: record {r}: {}", path.display(), msg.into())),
        }
    }

    /// `path:line` or `path:record N`, for messages.
    pub fn label(self, path: &Path) -> String {
        match self {
            Place::Line(l) => format!("{}:{l}", path.display()),
            Place::Record(r) => format!("{}: record {r}", path.display()),
        }
    }
}

fn parse_array<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<Vec<(usize, T)>> {
    let values: Vec<Value> = serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("{}: not a JSON array of records: {e}", path.display())))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if !v.is_object() {
                return Err(Place::Record(i + 1).error(path, "expected a JSON object"));
            }
            serde_json::from_value(v)
                .map(|t| (i + 1, t))
                .map_err(|e| Place::Record(i + 1).error(path, e.to_string()))
        })
        .collect()
}

/// Records of a JSONL file, or of a JSON array for the formats distributed that way.
fn read_records<T: DeserializeOwned>(bytes: &[u8], path: &Path, array_ok: bool) -> Result<Vec<(Place, T)>> {
    let out: Vec<(Place, T)> = if array_ok && is_json_array(bytes) {
        parse_array(bytes, path)?
            .into_iter()
            .map(|(i, t)| (Place::Record(i), t))
            .collect()
    } else {
        jsonl::parse_lines::<T>(bytes, path)?
            .into_iter()
            .map(|l| (Place::Line(l.line), l.value))
            .collect()
    };
    if out.is_empty() {
        return Err(no_records(path));
    }
    Ok(out)
}

/// An L-Eval record (`LEval-data/*/*.jsonl`); other fields (`source`, `evaluation`) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct LEvalRecord {
    pub instructions: Vec<String>,
    pub outputs: Vec<String>,
    pub input: String,
}

/// A LongBench-v2 record (`data.json`'s objects; `domain` .. `length` are kept for reference).
#[derive(Debug, Clone, Deserialize)]
pub struct LongBenchV2Record {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub sub_domain: String,
    #[serde(default)]
    pub difficulty: String,
    #[serde(default)]
    pub length: String,
    pub question: String,
    #[serde(rename = "choice_A")]
    pub choice_a: String,
    #[serde(rename = "choice_B")]
    pub choice_b: String,
    #[serde(rename = "choice_C")]
    pub choice_c: String,
    #[serde(rename = "choice_D")]
    pub choice_d: String,
    pub answer: String,
    pub context: String,
}

/// A GSM8K record as openai/grade-school-math ships it.
#[derive(Debug, Clone, Deserialize)]
pub struct Gsm8kRecord {
    pub question: String,
    /// The worked solution; its final answer follows the last `####`.
    pub answer: String,
}

/// The option letters an L-Eval output consists of (`C`, `(C)`, `ABD`), or `None` for any other
/// text.
fn option_letters(output: &str) -> Option<String> {
    let t = output.trim();
    let t = t
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(t)
        .trim();
    let ok = !t.is_empty() && t.len() <= 4 && t.bytes().all(|b| (b'A'..=b'D').contains(&b));
    ok.then(|| t.to_string())
}

/// The final answer of a GSM8K solution: the text after the last `####`, trimmed, with commas
/// removed; `None` unless that is a decimal number (optional `-`, digits, optional `.digits`).
pub fn gsm8k_final_answer(solution: &str) -> Option<String> {
    let (_, tail) = solution.rsplit_once("####")?;
    let n: String = tail.trim().chars().filter(|&c| c != ',').collect();
    let digits = n.strip_prefix('-').unwrap_or(&n);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (all_digits(int) && frac.is_none_or(all_digits)).then_some(n)
}

/// Reads an evaluation file in `format` (detected from the first record when `None`). Returns
/// the format and each question with its place in the file.
pub fn read(path: &Path, format: Option<EvalFormat>) -> Result<(EvalFormat, Vec<(Place, EvalQuestion)>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_bytes(&bytes, path, format)
}

/// [`read`] over bytes already in memory (`path` labels errors and names nothing else).
pub fn read_bytes(
    bytes: &[u8],
    path: &Path,
    format: Option<EvalFormat>,
) -> Result<(EvalFormat, Vec<(Place, EvalQuestion)>)> {
    let format = match format {
        Some(f) => f,
        None => detect_bytes(bytes, path)?,
    };
    let kind = format.answer_kind();
    let mut out = Vec::new();
    match format {
        EvalFormat::LongBench => {
            for (place, r) in read_records::<LongBenchRecord>(bytes, path, false)? {
                if r.answers.is_empty() {
                    return Err(place.error(path, "field `answers` is empty: the question has no gold answer"));
                }
                out.push((
                    place,
                    EvalQuestion {
                        id: r.id,
                        dataset: r.dataset,
                        target_tokens: r.target_tokens,
                        context: r.context.into(),
                        question: r.input,
                        choices: Vec::new(),
                        answers: r.answers,
                        kind,
                    },
                ));
            }
        }
        EvalFormat::LEval => {
            for (place, r) in read_records::<LEvalRecord>(bytes, path, false)? {
                if r.instructions.is_empty() {
                    return Err(place.error(path, "field `instructions` is empty: the record has no question"));
                }
                if r.instructions.len() != r.outputs.len() {
                    return Err(place.error(
                        path,
                        format!(
                            "{} `instructions` but {} `outputs`: each instruction needs its output",
                            r.instructions.len(),
                            r.outputs.len()
                        ),
                    ));
                }
                let n = match place {
                    Place::Line(n) | Place::Record(n) => n,
                };
                let input: Arc<str> = r.input.into();
                for (k, (q, a)) in r.instructions.into_iter().zip(r.outputs).enumerate() {
                    if a.trim().is_empty() {
                        return Err(place.error(
                            path,
                            format!("`outputs[{k}]` is empty: instruction {k} has no gold answer"),
                        ));
                    }
                    let (answer, kind) = match option_letters(&a) {
                        Some(l) if l.len() == 1 => (l, AnswerKind::Choice),
                        Some(l) => {
                            return Err(place.error(
                                path,
                                format!(
                                    "`outputs[{k}]` is {l:?}, several option letters (a multiple-answer question): \
                                     L-Eval's partial-credit exam metric for these is not implemented; remove the \
                                     instruction or evaluate it elsewhere"
                                ),
                            ));
                        }
                        None => (a, kind),
                    };
                    out.push((
                        place,
                        EvalQuestion {
                            id: format!("{n}.{k}"),
                            dataset: String::new(),
                            target_tokens: None,
                            context: Arc::clone(&input),
                            question: q,
                            choices: Vec::new(),
                            answers: vec![answer],
                            kind,
                        },
                    ));
                }
            }
        }
        EvalFormat::LongBenchV2 => {
            for (place, r) in read_records::<LongBenchV2Record>(bytes, path, true)? {
                let answer = r.answer.trim();
                if !matches!(answer, "A" | "B" | "C" | "D") {
                    return Err(place.error(
                        path,
                        format!(
                            "field `answer` is {:?}: expected one of \"A\", \"B\", \"C\", \"D\"",
                            r.answer
                        ),
                    ));
                }
                out.push((
                    place,
                    EvalQuestion {
                        id: r.id,
                        dataset: String::new(),
                        target_tokens: None,
                        context: r.context.into(),
                        question: r.question,
                        choices: vec![r.choice_a, r.choice_b, r.choice_c, r.choice_d],
                        answers: vec![answer.to_string()],
                        kind,
                    },
                ));
            }
        }
        EvalFormat::Gsm8k => {
            for (place, r) in read_records::<Gsm8kRecord>(bytes, path, false)? {
                let gold = gsm8k_final_answer(&r.answer).ok_or_else(|| {
                    place.error(
                        path,
                        "field `answer` does not end in `#### N` with N a number (GSM8K's final answer)",
                    )
                })?;
                let n = match place {
                    Place::Line(n) | Place::Record(n) => n,
                };
                out.push((
                    place,
                    EvalQuestion {
                        // GSM8K has no ids: the question's line in the file.
                        id: n.to_string(),
                        dataset: "gsm8k".into(),
                        target_tokens: None,
                        context: "".into(),
                        question: r.question,
                        choices: Vec::new(),
                        answers: vec![gold],
                        kind,
                    },
                ));
            }
        }
    }
    Ok((format, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("f.jsonl")
    }

    #[test]
    fn detects_each_format() {
        let cases = [
            (
                r#"{"_id":"a","input":"q","context":"c","answers":["x"]}"#,
                EvalFormat::LongBench,
            ),
            (
                r#"{"instructions":["q"],"outputs":["a"],"input":"doc"}"#,
                EvalFormat::LEval,
            ),
            (
                r#"{"_id":"a","question":"q","choice_A":"1","choice_B":"2","choice_C":"3","choice_D":"4","answer":"B","context":"c"}"#,
                EvalFormat::LongBenchV2,
            ),
            (r#"{"question":"q","answer":"so #### 5"}"#, EvalFormat::Gsm8k),
        ];
        for (line, want) in cases {
            let bytes = format!("\n{line}\n");
            assert_eq!(detect_bytes(bytes.as_bytes(), p()).unwrap(), want, "{line}");
        }
        let e = detect_bytes(b"{\"x\": 1}\n", p()).unwrap_err().to_string();
        assert!(e.starts_with("f.jsonl:1: cannot tell") && e.contains("[x]"), "{e}");
        let e = detect_bytes(b"\n\n", p()).unwrap_err().to_string();
        assert!(e.contains("no records"), "{e}");
    }

    #[test]
    fn leval_letters_are_multiple_choice() {
        let line = r#"{"instructions":["Q1 (A) x (B) y","Q2","Q3"],"outputs":["B","(C) ","True"],"input":"doc"}"#;
        let (f, qs) = read_bytes(line.as_bytes(), p(), None).unwrap();
        assert_eq!(f, EvalFormat::LEval);
        let got: Vec<(&str, &str, AnswerKind)> = qs
            .iter()
            .map(|(_, q)| (q.id.as_str(), q.answers[0].as_str(), q.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("1.0", "B", AnswerKind::Choice),
                ("1.1", "C", AnswerKind::Choice),
                ("1.2", "True", AnswerKind::Text)
            ]
        );
        let many = r#"{"instructions":["Q"],"outputs":["ABD"],"input":"doc"}"#;
        let e = read_bytes(many.as_bytes(), p(), None).unwrap_err().to_string();
        assert!(e.starts_with("f.jsonl:1: `outputs[0]` is \"ABD\""), "{e}");
    }

    #[test]
    fn gsm8k_final_answers() {
        assert_eq!(gsm8k_final_answer("a\n#### 1,234").as_deref(), Some("1234"));
        assert_eq!(gsm8k_final_answer("#### -3.50 ").as_deref(), Some("-3.50"));
        assert_eq!(gsm8k_final_answer("x #### 1 #### 7").as_deref(), Some("7"));
        assert_eq!(gsm8k_final_answer("no marker 5"), None);
        assert_eq!(gsm8k_final_answer("#### five"), None);
        assert_eq!(gsm8k_final_answer("#### 5."), None);
        assert_eq!(gsm8k_final_answer("####"), None);
    }

    #[test]
    fn formats_parse_by_name() {
        for f in EvalFormat::ALL {
            assert_eq!(f.name().parse::<EvalFormat>().unwrap(), f);
        }
        assert!(
            "csv"
                .parse::<EvalFormat>()
                .unwrap_err()
                .to_string()
                .contains("longbench-v2")
        );
    }
}
