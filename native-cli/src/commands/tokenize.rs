//! `sealong tokenize`: token ids of a text or of a rendered chat prompt (a debugging tool).

use anyhow::{Context, Result};
use sealong::loading::{ModelPath, TextAssets};

use crate::args::TokenizeArgs;
use crate::provision;

pub fn run(args: TokenizeArgs) -> Result<()> {
    let path = provision::resolve_model(&args.model.model)?;
    let assets = TextAssets::load(&ModelPath::detect(&path)?).context("loading the tokenizer")?;
    let (rendered, text) = match (&args.chat, &args.text) {
        (Some(msg), _) => {
            let rendered = assets.render(&[sealong::text::Message::user(msg.as_str())], true)?;
            (Some(rendered.clone()), rendered)
        }
        (None, Some(t)) => (None, t.clone()),
        (None, None) => anyhow::bail!("pass --text or --chat"),
    };
    let add_special = args.add_special_tokens && rendered.is_none();
    let ids = assets.tokenizer.encode(&text, add_special)?;
    if args.json {
        let tokens: Vec<String> = ids
            .iter()
            .map(|&i| assets.tokenizer.id_to_token(i).unwrap_or_default())
            .collect();
        let mut out = serde_json::json!({"ids": ids, "tokens": tokens, "n_tokens": ids.len()});
        if let Some(r) = rendered {
            out["rendered"] = serde_json::Value::String(r);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let Some(r) = &rendered {
            println!("{r}");
            println!("---");
        }
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", list.join(" "));
        println!("({} tokens)", ids.len());
    }
    Ok(())
}
