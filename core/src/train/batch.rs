//! Prompt/response masking for SFT and ORPO, as SEALONG (and XTuner) tokenize a pair: the prompt
//! is `template([user])` with the generation prompt, the full sequence is
//! `template([user, assistant: response])` without it (for ChatML it ends `<|im_end|>` `\n`),
//! both encoded without special tokens. The loss covers every token after the prompt: the
//! response, the end-of-turn token and whatever the template appends after it.

use crate::error::{Error, Result};
use crate::loading::TextAssets;
use crate::text::chat_template::Message;

/// The label of a position that takes no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// One tokenized conversation with its prompt masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// The full sequence (prompt then response).
    pub ids: Vec<u32>,
    /// How many leading ids are the prompt (`ids[..n_prompt]` take no loss).
    pub n_prompt: usize,
}

impl Tokenized {
    /// Checks that there is a prompt and at least one response token.
    pub fn new(ids: Vec<u32>, n_prompt: usize) -> Result<Self> {
        if n_prompt == 0 || n_prompt >= ids.len() {
            return Err(Error::Invalid(format!(
                "a training sequence needs a prompt and at least one response token \
                 ({} ids, {n_prompt} of them prompt)",
                ids.len()
            )));
        }
        Ok(Tokenized { ids, n_prompt })
    }

    /// Tokens that take the loss.
    pub fn n_response(&self) -> usize {
        self.ids.len() - self.n_prompt
    }

    /// The response ids (the targets of the loss).
    pub fn response_ids(&self) -> &[u32] {
        &self.ids[self.n_prompt..]
    }

    /// HF-style labels, unshifted: [`IGNORE_INDEX`] on prompt positions, the id elsewhere
    /// (position `t`'s label is predicted from the logits at `t - 1`).
    pub fn labels(&self) -> Vec<i64> {
        self.ids
            .iter()
            .enumerate()
            .map(|(t, &id)| if t < self.n_prompt { IGNORE_INDEX } else { i64::from(id) })
            .collect()
    }
}

/// A preference pair sharing one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPair {
    /// `template([user])` with the generation prompt.
    pub prompt_ids: Vec<u32>,
    pub chosen: Tokenized,
    pub rejected: Tokenized,
}

/// The prompt ids of `user_message` (generation prompt opened).
pub fn prompt_ids(assets: &TextAssets, user_message: &str) -> Result<Vec<u32>> {
    Ok(assets.chat_prompt(user_message)?.1)
}

/// `template([user, assistant: response])` encoded, with the prompt (`prompt_ids`) masked.
/// Fails if the prompt's ids are not a prefix of the full ids (a template or tokenizer that
/// merges across the boundary would make the mask ambiguous).
pub fn tokenize_response(
    assets: &TextAssets,
    user_message: &str,
    prompt_ids: &[u32],
    response: &str,
) -> Result<Tokenized> {
    let text = assets.render(&[Message::user(user_message), Message::assistant(response)], false)?;
    let ids = assets.tokenizer.encode(&text, false)?;
    if !ids.starts_with(prompt_ids) {
        return Err(Error::Invalid(format!(
            "the chat template's prompt ({} ids) is not a prefix of the prompt + response ids ({} ids); \
             cannot mask the prompt",
            prompt_ids.len(),
            ids.len()
        )));
    }
    Tokenized::new(ids, prompt_ids.len())
}

/// Tokenizes a pair for ORPO (or, using only `chosen`, SFT).
pub fn tokenize_pair(assets: &TextAssets, user_message: &str, chosen: &str, rejected: &str) -> Result<TokenizedPair> {
    let prompt = prompt_ids(assets, user_message)?;
    let chosen = tokenize_response(assets, user_message, &prompt, chosen)?;
    let rejected = tokenize_response(assets, user_message, &prompt, rejected)?;
    Ok(TokenizedPair {
        prompt_ids: prompt,
        chosen,
        rejected,
    })
}
