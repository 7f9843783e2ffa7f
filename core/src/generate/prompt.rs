//! Prompt ids for a question: the SEALONG user message rendered with the model's chat
//! template, checked against the context budget, and optionally shortened by cutting the middle
//! of the context (as LongBench does) instead of failing.

use crate::data::LongBenchRecord;
use crate::error::{Error, Result};
use crate::loading::TextAssets;
use crate::text::{Strategy, prompts};

/// A prompt ready for the model.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The raw user message (what the released SEALONG data calls `prompt`).
    pub user_message: String,
    /// Token ids of the rendered chat prompt (generation prompt opened).
    pub ids: Vec<u32>,
    /// Context tokens removed from the middle (0 when it fit).
    pub truncated_tokens: usize,
}

/// Builds the prompt of `record` with `strategy`. `budget` is the most prompt tokens allowed
/// (context length minus new tokens); over it, `truncate_middle` cuts the context's middle,
/// otherwise it is an error naming the record.
pub fn build(
    assets: &TextAssets,
    record: &LongBenchRecord,
    strategy: Strategy,
    budget: usize,
    truncate_middle: bool,
) -> Result<Prompt> {
    build_with(
        assets,
        &record.id,
        &record.context,
        |context| prompts::user_message(context, &record.input, strategy),
        budget,
        truncate_middle,
    )
}

/// Builds the prompt whose user message is `message(context)` (any evaluation format's message),
/// with the same budget check and middle truncation of `context` as [`build`]. `id` names the
/// question in errors.
pub fn build_with(
    assets: &TextAssets,
    id: &str,
    context: &str,
    message: impl Fn(&str) -> String,
    budget: usize,
    truncate_middle: bool,
) -> Result<Prompt> {
    let user_message = message(context);
    let (_, ids) = assets.chat_prompt(&user_message)?;
    if ids.len() <= budget {
        return Ok(Prompt {
            user_message,
            ids,
            truncated_tokens: 0,
        });
    }
    if !truncate_middle {
        return Err(Error::Invalid(format!(
            "question {id}: the prompt has {} tokens, more than the {budget} the model's context leaves \
             (pass --truncate-middle to cut the middle of the context, or lower --max-new-tokens)",
            ids.len()
        )));
    }
    let tok = &assets.tokenizer;
    let ctx_ids = tok.encode(context, false)?;
    let mut excess = ids.len() - budget;
    // Decoding a cut and re-encoding can move a token or two across the seam: shrink until it fits.
    for _ in 0..8 {
        let keep = ctx_ids.len().saturating_sub(excess);
        let head = keep / 2;
        let tail = keep - head;
        let context = format!(
            "{}{}",
            tok.decode(&ctx_ids[..head], false)?,
            tok.decode(&ctx_ids[ctx_ids.len() - tail..], false)?
        );
        let user_message = message(&context);
        let (_, ids) = assets.chat_prompt(&user_message)?;
        if ids.len() <= budget {
            return Ok(Prompt {
                user_message,
                ids,
                truncated_tokens: ctx_ids.len() - keep,
            });
        }
        excess += ids.len() - budget;
    }
    Err(Error::Invalid(format!(
        "question {id}: cannot fit the prompt into {budget} tokens even after cutting the context"
    )))
}
