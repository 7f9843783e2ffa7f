//! `sealong tokenize`: token ids of a text, of a chat prompt for one user message, or of a whole
//! conversation rendered with the model's chat template (a debugging tool). `--model` may be a
//! directory holding only the tokenizer files.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use sealong::loading::{ModelPath, TextAssets};
use sealong::text::Message;
use serde_json::Value;

use crate::args::ModelArgs;
use crate::provision;

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    // `--model` may also be a directory holding only the tokenizer files (tokenizer.json,
    // tokenizer_config.json, special_tokens_map.json): nothing but those is read.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to tokenize as is (special tokens written in it are matched).
    #[arg(long, conflicts_with_all = ["chat", "messages"], required_unless_present_any = ["chat", "messages"])]
    pub text: Option<String>,
    /// A user message: render the model's chat template, then tokenize.
    #[arg(long, conflicts_with = "messages")]
    pub chat: Option<String>,
    /// A whole conversation to render with the model's chat template: a JSON file holding a
    /// list of `{"role": ..., "content": ...}` objects.
    #[arg(long, value_name = "FILE.json")]
    pub messages: Option<PathBuf>,
    /// With --chat or --messages: leave the generation prompt (the opened assistant turn) off.
    #[arg(long)]
    pub no_generation_prompt: bool,
    /// Also apply the tokenizer's post-processor (e.g. BOS) when encoding. Chat templates write
    /// their own BOS, so with --chat / --messages this shows what a server that encodes the
    /// rendered string with special tokens gets (Llama-3: two BOS).
    #[arg(long)]
    pub add_special_tokens: bool,
    /// Print JSON: ids, token strings, n_tokens, and the text that was encoded as "prompt"
    /// (for --chat / --messages the rendered conversation, also under "rendered").
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    run_to(args, &mut crate::output::Stdout)
}

/// Runs the command, writing its output to `out` (stdout for the binary, which ends quietly
/// when its reader goes away). A writer that reports a closed pipe ends the output quietly too.
pub fn run_to(args: TokenizeArgs, out: &mut dyn Write) -> Result<()> {
    let text = output(&args)?;
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the output"),
    }
}

/// Everything the command prints.
fn output(args: &TokenizeArgs) -> Result<String> {
    // Read the conversation before loading a tokenizer, so a bad file fails fast.
    let messages = match (&args.chat, &args.messages) {
        (Some(msg), _) => Some(vec![Message::user(msg.as_str())]),
        (None, Some(file)) => Some(read_messages(file)?),
        (None, None) => None,
    };
    if messages.is_none() && args.no_generation_prompt {
        bail!("--no-generation-prompt applies to --chat or --messages, not to --text");
    }
    let path = provision::resolve_model(&args.model.model)?;
    let assets = TextAssets::load(&ModelPath::detect(&path)?).context("loading the tokenizer")?;
    let (rendered, text) = match (&messages, &args.text) {
        (Some(msgs), _) => {
            let rendered = assets
                .render(msgs, !args.no_generation_prompt)
                .context("rendering the chat template")?;
            (Some(rendered.clone()), rendered)
        }
        (None, Some(t)) => (None, t.clone()),
        (None, None) => bail!("pass --text, --chat or --messages"),
    };
    let ids = assets.tokenizer.encode(&text, args.add_special_tokens)?;
    let mut s = String::new();
    if args.json {
        let tokens: Vec<String> = ids
            .iter()
            .map(|&i| assets.tokenizer.id_to_token(i).unwrap_or_default())
            .collect();
        let mut out = serde_json::json!({
            "ids": ids, "tokens": tokens, "n_tokens": ids.len(), "prompt": text,
        });
        if let Some(r) = rendered {
            out["rendered"] = Value::String(r);
        }
        s.push_str(&serde_json::to_string_pretty(&out)?);
        s.push('\n');
    } else {
        if let Some(r) = &rendered {
            s.push_str(r);
            s.push_str("\n---\n");
        }
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        s.push_str(&list.join(" "));
        s.push_str(&format!("\n({} tokens)\n", ids.len()));
    }
    Ok(s)
}

/// A `--messages` file: a JSON list of `{"role": string, "content": string}` objects. Errors
/// name the file and, for a bad entry, its position in the list.
pub fn read_messages(path: &Path) -> Result<Vec<Message>> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("reading the messages file {shown}"))?;
    let value: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!("{shown}: malformed JSON; expected a list of {{\"role\": ..., \"content\": ...}} objects")
    })?;
    let Value::Array(list) = value else {
        bail!(
            "{shown}: expected a JSON list of {{\"role\": ..., \"content\": ...}} objects, found {}",
            kind(&value)
        );
    };
    if list.is_empty() {
        bail!("{shown}: the list of messages is empty");
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{shown}: message {} (index {i})", i + 1);
            let Value::Object(obj) = m else {
                bail!("{at} is {}, expected an object with \"role\" and \"content\"", kind(m));
            };
            let field = |key: &str| -> Result<String> {
                match obj.get(key) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(other) => bail!("{at}: \"{key}\" is {}, expected a string", kind(other)),
                    None => bail!("{at} has no \"{key}\""),
                }
            };
            Ok(Message {
                role: field("role")?,
                content: field("content")?,
            })
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
