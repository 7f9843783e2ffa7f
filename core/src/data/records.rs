//! The record types of the QA datasets SEALONG reads (MuSiQue, HotpotQA / 2WikiMultihopQA in the
//! distractor format, a `{title, text}` paragraph pool) and of LongBench, the schema of the
//! questions files it writes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::jsonl::{self, Line};
use crate::error::{Error, Result};

/// A MuSiQue v1.0 record (original schema; `question_decomposition` is not needed).
#[derive(Debug, Clone, Deserialize)]
pub struct MusiqueRecord {
    #[serde(deserialize_with = "id_from_string_or_number")]
    pub id: String,
    pub paragraphs: Vec<MusiqueParagraph>,
    pub question: String,
    pub answer: String,
    #[serde(default)]
    pub answer_aliases: Vec<String>,
    /// MuSiQue-Ans records are all answerable; the full (unanswerable) variant says so here.
    #[serde(default = "default_true")]
    pub answerable: bool,
}

/// Ids are strings, but some real dataset files store a number; both become a string.
fn id_from_string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct MusiqueParagraph {
    #[serde(default)]
    pub idx: usize,
    pub title: String,
    pub paragraph_text: String,
    pub is_supporting: bool,
}

/// A HotpotQA or 2WikiMultihopQA record in the distractor format.
#[derive(Debug, Clone, Deserialize)]
pub struct MultiHopRecord {
    /// Some real records carry a number here; ids are kept as strings.
    #[serde(rename = "_id", deserialize_with = "id_from_string_or_number")]
    pub id: String,
    pub question: String,
    pub answer: String,
    /// `[title, sentence index]` pairs.
    pub supporting_facts: Vec<(String, serde_json::Value)>,
    /// `[title, [sentence, ...]]` pairs.
    pub context: Vec<(String, Vec<String>)>,
}

/// A document of a paragraph pool (MuSiQue corpus, 2Wiki passages): `{title, text}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Paragraph {
    pub title: String,
    pub text: String,
}

/// A question in LongBench's schema (DESIGN.md stage 1), so that real LongBench files load
/// unchanged. Fields after `dataset` are ours and optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongBenchRecord {
    #[serde(rename = "_id", deserialize_with = "id_from_string_or_number")]
    pub id: String,
    /// The question.
    pub input: String,
    pub context: String,
    pub answers: Vec<String>,
    /// LongBench's `length`: the context's word count (`len(context.split())`).
    #[serde(default)]
    pub length: usize,
    #[serde(default)]
    pub dataset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_classes: Option<serde_json::Value>,
    /// Context tokens with the tokenizer named in the run (no special tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_tokens: Option<usize>,
    /// The random target the context was built towards (synthesized questions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tokens: Option<usize>,
    /// 1-based numbers of the passages that support the answer (diagnostics only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supporting_passages: Vec<usize>,
    /// Other accepted answers (MuSiQue aliases), for diagnostics; the gold list is `answers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer_aliases: Vec<String>,
}

/// Reads a MuSiQue JSONL file.
pub fn read_musique(path: &Path) -> Result<Vec<Line<MusiqueRecord>>> {
    let lines: Vec<Line<MusiqueRecord>> = jsonl::read(path)?;
    for l in &lines {
        if l.value.paragraphs.is_empty() {
            return Err(Error::record(path, l.line, "record has no paragraphs"));
        }
    }
    Ok(lines)
}

/// Reads a HotpotQA / 2Wiki JSONL file (distractor format).
pub fn read_multihop(path: &Path) -> Result<Vec<Line<MultiHopRecord>>> {
    let lines: Vec<Line<MultiHopRecord>> = jsonl::read(path)?;
    for l in &lines {
        if l.value.context.is_empty() {
            return Err(Error::record(path, l.line, "record has an empty context"));
        }
    }
    Ok(lines)
}

/// Reads a `{title, text}` paragraph pool.
pub fn read_paragraphs(path: &Path) -> Result<Vec<Line<Paragraph>>> {
    jsonl::read(path)
}

/// Reads a LongBench-schema JSONL file (real LongBench files or ours).
pub fn read_longbench(path: &Path) -> Result<Vec<Line<LongBenchRecord>>> {
    jsonl::read(path)
}

/// Joins a distractor-format paragraph's sentences. HotpotQA sentences carry their own leading
/// space; 2Wiki's do not, so a space is inserted only where neither side has whitespace.
pub fn join_sentences(sentences: &[String]) -> String {
    let mut out = String::new();
    for s in sentences {
        let need_space = !out.is_empty()
            && !out.ends_with(char::is_whitespace)
            && !s.starts_with(char::is_whitespace)
            && !s.is_empty();
        if need_space {
            out.push(' ');
        }
        out.push_str(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_join_like_the_sources() {
        let hotpot = vec!["A b.".to_string(), " C d.".to_string()];
        assert_eq!(join_sentences(&hotpot), "A b. C d.");
        let wiki = vec!["A b.".to_string(), "C d.".to_string()];
        assert_eq!(join_sentences(&wiki), "A b. C d.");
    }

    #[test]
    fn missing_field_names_the_line() {
        let p = Path::new("m.jsonl");
        let bytes = b"{\"id\":\"x\",\"paragraphs\":[],\"answer\":\"y\"}\n";
        let e = jsonl::parse_lines::<MusiqueRecord>(bytes, p).unwrap_err().to_string();
        assert!(e.contains("m.jsonl:1: missing field `question`"), "{e}");
    }
}
