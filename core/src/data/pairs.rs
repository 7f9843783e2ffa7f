//! Training records (stage 3's `--pairs` output, the released SEALONG / TRL preference schema):
//! `{"prompt", "chosen", "rejected", "messages"}`, plus the `id` sealong adds.
//!
//! Accepted forms, so that files from other tools train unchanged:
//! - `prompt`, `chosen`, `rejected` as strings (SEALONG's released datasets, `sealong score`);
//! - TRL's conversational form: `prompt` a list of messages (the last user turn is the prompt),
//!   `chosen` / `rejected` lists of messages (the last assistant turn is the response);
//! - for SFT only: `messages` alone (`[user, assistant]`, the SEALONG SFT column).
//!
//! Records without an `id` are named by their line (`line-7`), which keeps data positions
//! stable for resuming as long as the file is not edited.

use std::path::Path;

use serde_json::Value;

use crate::data::jsonl;
use crate::error::{Error, Result};

/// One training example: the user message and the responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    pub id: String,
    /// The raw user message (the chat template is applied at tokenization).
    pub prompt: String,
    /// The preferred response (the SFT target).
    pub chosen: String,
    /// The dispreferred response; `None` in SFT-only records.
    pub rejected: Option<String>,
    /// 1-based line in the file it came from.
    pub line: usize,
}

/// The content of the last message with `role` in a message list.
fn last_turn(list: &[Value], role: &str) -> Option<String> {
    list.iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some(role))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A string field, or the last `role` turn of a message-list field.
fn text_field(v: &Value, key: &str, role: &str) -> std::result::Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => last_turn(list, role)
            .map(Some)
            .ok_or_else(|| format!("\"{key}\" is a message list without a {role} turn holding a string")),
        Some(_) => Err(format!("\"{key}\" must be a string or a list of messages")),
    }
}

impl PreferencePair {
    /// Reads one record; `need_rejected` is true for ORPO. Errors name `path:line`.
    pub fn from_value(v: &Value, path: &Path, line: usize, need_rejected: bool) -> Result<Self> {
        let err = |m: String| Error::record(path, line, m);
        let id = jsonl::id_string(v, "id").unwrap_or_else(|| format!("line-{line}"));
        let messages = match v.get("messages") {
            Some(Value::Array(list)) => Some(list.as_slice()),
            _ => None,
        };
        let prompt = match text_field(v, "prompt", "user").map_err(&err)? {
            Some(p) => p,
            None => messages.and_then(|m| last_turn(m, "user")).ok_or_else(|| {
                err(format!(
                    "record {id:?} has no \"prompt\" (nor a user turn in \"messages\")"
                ))
            })?,
        };
        let chosen = match text_field(v, "chosen", "assistant").map_err(&err)? {
            Some(c) => c,
            None => messages.and_then(|m| last_turn(m, "assistant")).ok_or_else(|| {
                err(format!(
                    "record {id:?} has no \"chosen\" (nor an assistant turn in \"messages\")"
                ))
            })?,
        };
        let rejected = text_field(v, "rejected", "assistant").map_err(&err)?;
        if need_rejected && rejected.is_none() {
            return Err(err(format!(
                "record {id:?} has no \"rejected\" response; ORPO needs pairs (use --method sft for chosen-only data)"
            )));
        }
        Ok(PreferencePair {
            id,
            prompt,
            chosen,
            rejected,
            line,
        })
    }
}

/// Reads a pairs file. Duplicate ids are an error (they would make data positions ambiguous).
pub fn read_pairs(path: &Path, need_rejected: bool) -> Result<Vec<PreferencePair>> {
    let lines = jsonl::read::<Value>(path)?;
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let p = PreferencePair::from_value(&l.value, path, l.line, need_rejected)?;
        if let Some(first) = seen.insert(p.id.clone(), l.line) {
            return Err(Error::record(
                path,
                l.line,
                format!("id {:?} already appeared on line {first}", p.id),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value, need_rejected: bool) -> Result<PreferencePair> {
        PreferencePair::from_value(&v, Path::new("p.jsonl"), 3, need_rejected)
    }

    #[test]
    fn string_and_message_forms() -> Result<()> {
        let a = parse(json!({"id": 7, "prompt": "q", "chosen": "a", "rejected": "b"}), true)?;
        assert_eq!((a.id.as_str(), a.prompt.as_str(), a.chosen.as_str()), ("7", "q", "a"));
        assert_eq!(a.rejected.as_deref(), Some("b"));
        let b = parse(
            json!({"prompt": [{"role": "user", "content": "q"}],
                   "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                   "rejected": [{"role": "assistant", "content": "b"}]}),
            true,
        )?;
        assert_eq!(
            (b.id.as_str(), b.prompt.as_str(), b.chosen.as_str()),
            ("line-3", "q", "a")
        );
        let c = parse(
            json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
            false,
        )?;
        assert_eq!((c.prompt.as_str(), c.chosen.as_str(), c.rejected), ("q", "a", None));
        Ok(())
    }

    #[test]
    fn missing_fields_name_the_line() {
        let e = parse(json!({"prompt": "q", "chosen": "a"}), true)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.starts_with("p.jsonl:3:") && m.contains("rejected")),
            "{e:?}"
        );
        let e = parse(json!({"chosen": "a", "rejected": "b"}), true)
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|m| m.contains("prompt")), "{e:?}");
        let e = parse(json!({"prompt": 3, "chosen": "a", "rejected": "b"}), true)
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|m| m.contains("must be a string")), "{e:?}");
    }
}
