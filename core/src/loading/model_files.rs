//! Which kind of model a path is (a .gguf file or an HF directory), mapping files into memory,
//! and loading the text side of a model: tokenizer and chat template.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::loading::gguf::{Gguf, GgufValue};
use crate::text::{ChatTemplate, Message, Tokenizer};

/// The sha256 (hex) of a model or adapter path: of the file itself, or for a directory of the
/// list of its files' names and sha256s (top level, sorted, hidden files left out). Recorded in
/// the settings sidecar of every output a model shapes (`data::settings`), so a resume with
/// other weights is refused even when the path is the same.
///
/// Cost: one read of the files, ~1 GB/s, so seconds for a multi-GB model, once per stage start;
/// cheaper keys were rejected: a path says nothing about its contents (a re-exported model
/// lands at the same path), and size + mtime change whenever a file is copied.
pub fn sha256_of(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let file_hash = |p: &Path| -> Result<String> {
        let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| Error::io(p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex(&h.finalize()))
    };
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return file_hash(path);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    let mut h = Sha256::new();
    for name in names {
        h.update(format!("{name}\0{}\n", file_hash(&path.join(&name))?).as_bytes());
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A model on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPath {
    /// A single GGUF file (weights, config, tokenizer and template in its metadata).
    Gguf(PathBuf),
    /// An HF directory: config.json, *.safetensors, tokenizer.json, tokenizer_config.json.
    HfDir(PathBuf),
}

impl ModelPath {
    /// Tells what `path` is, with an error that says what was expected.
    pub fn detect(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::Model {
            path: path.display().to_string(),
            message: format!("cannot open it ({e}); expected a .gguf file or an HF model directory"),
        })?;
        if meta.is_dir() {
            if !path.join("tokenizer.json").is_file() && !path.join("config.json").is_file() {
                return Err(Error::Model {
                    path: path.display().to_string(),
                    message: "the directory has neither config.json nor tokenizer.json; expected an HF model directory"
                        .into(),
                });
            }
            return Ok(ModelPath::HfDir(path.to_path_buf()));
        }
        let mut magic = [0u8; 4];
        let ok = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok();
        if ok && &magic == b"GGUF" {
            Ok(ModelPath::Gguf(path.to_path_buf()))
        } else {
            Err(Error::Model {
                path: path.display().to_string(),
                message: "not a GGUF file (no GGUF magic) and not a directory".into(),
            })
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelPath::Gguf(p) | ModelPath::HfDir(p) => p,
        }
    }
}

/// A file's bytes, memory-mapped where the platform allows (model files are large and read
/// once), otherwise read into memory.
pub enum FileBytes {
    #[cfg(not(target_family = "wasm"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_family = "wasm"))]
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl FileBytes {
    /// Drops this process's resident pages of `part` (a slice of these bytes) once the loader
    /// has copied it: the whole pages inside it leave the RSS, so loading holds the copies and
    /// one tensor's mapped pages, not the copies and the whole mapped file. A later read of
    /// `part` faults the same bytes back in from the file. Does nothing for owned bytes or on
    /// other platforms, and ignores a refusal (the pages then simply stay resident).
    pub fn release(&self, part: &[u8]) {
        #[cfg(all(unix, not(target_family = "wasm")))]
        if let FileBytes::Mapped(m) = self {
            const PAGE: usize = 4096;
            let base = m.as_ptr() as usize;
            let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
            if start < base || end > base + m.len() {
                return;
            }
            // Whole pages only: a page shared with the next tensor stays.
            let (lo, hi) = ((start - base).next_multiple_of(PAGE), (end - base) / PAGE * PAGE);
            if hi > lo {
                // SAFETY: the map is a read-only shared mapping of a file (`Mmap::map`): after
                // MADV_DONTNEED the pages are read again from the file on the next access, with
                // the same bytes, so borrowed slices stay valid and unchanged.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo) };
            }
        }
        let _ = part;
    }
}

/// Maps `path` read-only.
pub fn map_file(path: &Path) -> Result<FileBytes> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    #[cfg(not(target_family = "wasm"))]
    {
        // SAFETY: the map is read-only; a model file changed underneath a running process is
        // outside what we support (as in every mmap-based loader: llama.cpp, candle, safetensors).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(FileBytes::Mapped(map))
    }
    #[cfg(target_family = "wasm")]
    {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut { file }, &mut v).map_err(|e| Error::io(path, e))?;
        Ok(FileBytes::Owned(v))
    }
}

/// A GGUF file mapped in memory together with its parsed header.
pub struct GgufFile {
    pub bytes: FileBytes,
    pub header: Gguf,
    pub path: PathBuf,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = map_file(path)?;
        let header = Gguf::parse(&bytes, &path.display().to_string())?;
        Ok(GgufFile {
            bytes,
            header,
            path: path.to_path_buf(),
        })
    }
}

/// The text side of a decoder model: tokenizer and chat template.
#[derive(Debug, Clone)]
pub struct TextAssets {
    pub tokenizer: Tokenizer,
    /// The model's own template; `None` for base models without one.
    pub chat_template: Option<ChatTemplate>,
    /// Where the template came from (a GGUF key or an HF file and field), for `models inspect`.
    pub template_source: Option<String>,
    /// Where they came from (for messages).
    pub source: String,
}

impl TextAssets {
    /// Loads tokenizer and template from a .gguf or an HF directory.
    pub fn load(model: &ModelPath) -> Result<Self> {
        match model {
            ModelPath::Gguf(p) => {
                let file = GgufFile::open(p)?;
                Self::from_gguf(&file.header, &p.display().to_string())
            }
            ModelPath::HfDir(dir) => Self::from_hf_dir(dir),
        }
    }

    /// From a parsed GGUF header.
    pub fn from_gguf(gguf: &Gguf, source: &str) -> Result<Self> {
        let tokenizer = Tokenizer::from_gguf(gguf, source)?;
        let template = gguf.get("tokenizer.chat_template").and_then(GgufValue::as_str);
        let chat_template = match template {
            Some(src) => Some(ChatTemplate::new(
                src,
                tokenizer.bos_token.as_deref().unwrap_or(""),
                tokenizer.eos_token.as_deref().unwrap_or(""),
            )?),
            None => None,
        };
        Ok(TextAssets {
            tokenizer,
            chat_template,
            template_source: template.map(|_| "GGUF metadata tokenizer.chat_template".to_string()),
            source: source.to_string(),
        })
    }

    /// From an HF directory (or one holding only the tokenizer files): tokenizer.json,
    /// tokenizer_config.json (special tokens and `chat_template`), special_tokens_map.json (its
    /// special tokens win, as in transformers), or a `chat_template.jinja` / `chat_template.json`
    /// beside them. config.json and weights are not read.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::Model {
                path: dir.display().to_string(),
                message: "no tokenizer.json in the model directory".into(),
            });
        }
        let mut tokenizer = Tokenizer::from_json_file(&tok_path)?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            Value::Null
        };
        // transformers lets special_tokens_map.json override tokenizer_config.json's entries.
        let map_path = dir.join("special_tokens_map.json");
        let map: Value = if map_path.is_file() {
            read_json(&map_path)?
        } else {
            Value::Null
        };
        let special = |key: &str| -> Option<String> {
            let token = |v: &Value| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
                _ => None,
            };
            map.get(key).and_then(token).or_else(|| config.get(key).and_then(token))
        };
        tokenizer.set_special_tokens(special("bos_token"), special("eos_token"), special("pad_token"));
        tokenizer.add_bos = config.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        let template = hf_chat_template(dir, &config)?;
        let chat_template = match &template {
            Some((_, src)) => Some(ChatTemplate::new(
                src,
                tokenizer.bos_token.as_deref().unwrap_or(""),
                tokenizer.eos_token.as_deref().unwrap_or(""),
            )?),
            None => None,
        };
        Ok(TextAssets {
            tokenizer,
            chat_template,
            template_source: template.map(|(from, _)| from),
            source: dir.display().to_string(),
        })
    }

    /// The template, or an error saying the model has none.
    pub fn template(&self) -> Result<&ChatTemplate> {
        self.chat_template.as_ref().ok_or_else(|| Error::Model {
            path: self.source.clone(),
            message: "the model has no chat template (tokenizer.chat_template / chat_template)".into(),
        })
    }

    /// Renders `messages` with the model's template.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template()?.render(messages, add_generation_prompt)
    }

    /// Rendered prompt and its ids for one user message with the generation prompt opened
    /// (`apply_chat_template([user], add_generation_prompt=True)` then encoding without
    /// special tokens, as HF and the SEALONG code do).
    pub fn chat_prompt(&self, user_message: &str) -> Result<(String, Vec<u32>)> {
        let rendered = self.render(&[Message::user(user_message)], true)?;
        let ids = self.tokenizer.encode(&rendered, false)?;
        Ok((rendered, ids))
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Model {
        path: path.display().to_string(),
        message: format!("malformed JSON: {e}"),
    })
}

/// The template of an HF directory and where it was found, in transformers' order.
fn hf_chat_template(dir: &Path, config: &Value) -> Result<Option<(String, String)>> {
    match config.get("chat_template") {
        Some(Value::String(s)) => return Ok(Some(("tokenizer_config.json chat_template".into(), s.clone()))),
        Some(Value::Array(list)) => {
            // Named templates: use "default" (what HF picks without a `chat_template` argument).
            let found = list.iter().find_map(|t| {
                (t.get("name").and_then(Value::as_str) == Some("default"))
                    .then(|| t.get("template").and_then(Value::as_str))
                    .flatten()
            });
            if let Some(s) = found {
                let from = "tokenizer_config.json chat_template (the one named \"default\")";
                return Ok(Some((from.into(), s.to_string())));
            }
        }
        _ => {}
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(|s| Some(("chat_template.jinja".into(), s)))
            .map_err(|e| Error::io(&jinja, e));
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        let v = read_json(&json)?;
        return Ok(v
            .get("chat_template")
            .and_then(Value::as_str)
            .map(|s| ("chat_template.json chat_template".into(), s.to_string())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::sha256_of;

    #[test]
    fn a_model_fingerprint_follows_the_contents_not_the_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("m.gguf");
        std::fs::write(&f, b"abc").expect("write");
        assert_eq!(
            sha256_of(&f).expect("file"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = dir.path().join("hf");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("config.json"), b"{}").expect("config");
        std::fs::write(d.join("model.safetensors"), b"weights").expect("weights");
        let a = sha256_of(&d).expect("dir");
        // A temporary file of an interrupted write does not count.
        std::fs::write(d.join(".model.safetensors.1.tmp"), b"half").expect("tmp");
        assert_eq!(sha256_of(&d).expect("dir"), a);
        std::fs::write(d.join("model.safetensors"), b"other weights").expect("weights");
        assert_ne!(sha256_of(&d).expect("dir"), a, "new weights at the same path");
    }
}
