//! JSON Lines reading and appending: every error names the file and 1-based line; writers
//! append and flush record by record, and resuming skips ids already written, so a killed stage
//! loses at most the record it was writing.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// One line of a JSONL file, parsed.
#[derive(Debug, Clone)]
pub struct Line<T> {
    /// 1-based line number in the file.
    pub line: usize,
    pub value: T,
}

/// Reads every non-blank line of `bytes` as JSON and converts it to `T`. `path` labels errors.
/// Blank lines are skipped (editors add them); anything else that is not a JSON object of the
/// expected shape is an error naming the line.
pub fn parse_lines<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<Vec<Line<T>>> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        out.push(Line {
            line,
            value: parse_line(raw, path, line)?,
        });
    }
    Ok(out)
}

/// Parses one line's bytes.
pub fn parse_line<T: DeserializeOwned>(raw: &[u8], path: &Path, line: usize) -> Result<T> {
    let text = std::str::from_utf8(raw).map_err(|e| {
        Error::record(
            path,
            line,
            format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
        )
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::record(path, line, format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::record(path, line, "expected a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| Error::record(path, line, e.to_string()))
}

/// Reads and parses a whole JSONL file. An empty file (no records) is an error: every stage
/// needs at least one record, and an empty input is almost always a wrong path or a failed
/// earlier stage.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<Line<T>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let lines = parse_lines(&bytes, path)?;
    if lines.is_empty() {
        return Err(Error::Invalid(format!("{}: the file has no records", path.display())));
    }
    Ok(lines)
}

/// Appends records to a JSONL file, one `write` + flush per record.
pub struct Appender {
    file: File,
    path: PathBuf,
}

impl Appender {
    /// Opens `path` for appending, creating it (and its parent directory) if needed. A last line
    /// without its newline (a write cut off by a kill) is removed first, so the file holds only
    /// whole records.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        drop_partial_last_line(&mut file, path)?;
        Ok(Appender {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes one record as a single line and flushes it.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| Error::Invalid(format!("{}: cannot serialize record: {e}", self.path.display())))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    /// Flushes the records to disk (`fsync`). Stages call it once, when they end: every record
    /// is already handed to the OS as it is written (a killed process loses nothing), and this
    /// makes a finished stage survive a power cut too, without a disk round trip per record.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn drop_partial_last_line(file: &mut File, path: &Path) -> Result<()> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1)).map_err(|e| Error::io(path, e))?;
    file.read_exact(&mut last).map_err(|e| Error::io(path, e))?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the start of the unterminated line and cut it off.
    let mut contents = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    file.read_to_end(&mut contents).map_err(|e| Error::io(path, e))?;
    let keep = contents.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    tracing::warn!(
        "{}: removing an incomplete last line ({} bytes) left by an interrupted run",
        path.display(),
        contents.len() - keep
    );
    file.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// The ids already present in an output file (field `id_field` of each complete line), for
/// resuming. A missing file means nothing is done yet. Lines that fail to parse are errors.
/// An unterminated last line (an interrupted run's) never counts, even when it parses:
/// [`Appender::open`] removes it, so its record must be redone, and the resumed file ends equal
/// to an uninterrupted run's.
pub fn existing_ids(path: &Path, id_field: &str) -> Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for l in complete_records(path)? {
        let id = id_string(&l.value, id_field)
            .ok_or_else(|| Error::record(path, l.line, format!("record has no {id_field:?} field")))?;
        ids.insert(id);
    }
    Ok(ids)
}

/// The records of an output file's complete lines, as [`existing_ids`] counts them: a missing
/// file has none, an unterminated last line is left out (a resume redoes it), and a line that
/// fails to parse is an error naming the file and line.
pub fn complete_records(path: &Path) -> Result<Vec<Line<Value>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let Some(raw) = buf.strip_suffix(b"\n") else {
            // The last line, cut off before its newline: the appender drops it on reopen.
            break;
        };
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        records.push(Line {
            line,
            value: parse_line::<Value>(raw, path, line)?,
        });
    }
    Ok(records)
}

/// A record's id as a string (ids may be strings or numbers in the wild).
pub fn id_string(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_and_line() {
        let p = Path::new("in.jsonl");
        let e = parse_lines::<Value>(b"{\"a\":1}\n\n{bad\n", p).unwrap_err().to_string();
        assert!(e.starts_with("in.jsonl:3: malformed JSON"), "{e}");
        let e = parse_lines::<Value>(b"[1]\n", p).unwrap_err().to_string();
        assert!(e.contains("in.jsonl:1: expected a JSON object"), "{e}");
        let e = parse_lines::<Value>(b"{}\n{\"x\":\"\xff\"}\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.jsonl:2: not valid UTF-8"), "{e}");
    }

    #[test]
    fn appender_drops_a_cut_off_line_and_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out/x.jsonl");
        let mut a = Appender::open(&path).expect("open");
        a.append(&serde_json::json!({"id": "q1"})).expect("append");
        drop(a);
        // Simulate a kill in the middle of the second record.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"id\": \"q2\", \"sam").expect("write");
        drop(f);
        assert_eq!(existing_ids(&path, "id").expect("ids").len(), 1);
        let mut a = Appender::open(&path).expect("reopen");
        a.append(&serde_json::json!({"id": 7})).expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"id\":\"q1\"}\n{\"id\":7}\n");
        let ids = existing_ids(&path, "id").expect("ids");
        assert!(ids.contains("q1") && ids.contains("7"));
    }

    /// Issue 17: a last line that parses but lost its newline was counted as done while the
    /// appender deleted it, so the record was neither kept nor redone.
    #[test]
    fn an_unterminated_last_line_that_parses_is_not_done_and_is_redone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"id\":\"q1\"}\n{\"id\":\"q2\"}").expect("write");
        let ids = existing_ids(&path, "id").expect("ids");
        assert_eq!(ids, HashSet::from(["q1".to_string()]), "q2 is not done");
        // What a stage does next: open, then append every id not done.
        let mut a = Appender::open(&path).expect("open");
        for id in ["q1", "q2", "q3"] {
            if !ids.contains(id) {
                a.append(&serde_json::json!({ "id": id })).expect("append");
            }
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"id\":\"q1\"}\n{\"id\":\"q2\"}\n{\"id\":\"q3\"}\n");
        // An unterminated last line without the id field is not an error either.
        std::fs::write(&path, "{\"id\":\"q1\"}\n{\"other\":1}").expect("write");
        assert_eq!(existing_ids(&path, "id").expect("ids").len(), 1);
        // A complete line without the id still is, naming the line.
        std::fs::write(&path, "{\"id\":\"q1\"}\n{\"other\":1}\n").expect("write");
        let e = existing_ids(&path, "id").unwrap_err().to_string();
        assert!(e.contains("x.jsonl:2") && e.contains("no \"id\" field"), "{e}");
    }
}
