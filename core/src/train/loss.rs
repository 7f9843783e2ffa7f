//! The shared-prompt pair forward the trainer runs: the final hidden states that predict each
//! response token, with the prompt run once (`P + 2R` positions for a pair instead of
//! `2(P + R)`). The loss of those states is the shaders crate's fused, vocabulary-chunked label
//! log-probabilities and the objective in [`crate::train::orpo`]; the eager twin in plain burn ops
//! (full-sequence forwards, `[n, vocab]` logits) is only the tests' yardstick and lives in the
//! tests crate (`sealong_tests::eager`).

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::models::decoder::Decoder;

/// The final hidden states at the positions that predict response tokens, with those tokens.
#[derive(Debug, Clone)]
pub struct ResponseHidden {
    /// All rows' positions, row after row.
    ///
    /// # Shapes
    /// `[total response tokens, hidden]`.
    pub hidden: Tensor<2>,
    /// The token each position predicts (`[total response tokens]`).
    pub labels: Vec<u32>,
    /// Response tokens per row.
    pub counts: Vec<usize>,
}

/// The final hidden states predicting the response tokens of rows that share one prompt, with
/// the prompt run once: a batch-1 forward of `prompt`, its cache forked for the rows, then the
/// responses as one right-padded batch against that shared prefix (gradients flow back into the
/// prompt's positions through its keys and values). For a pair this costs `P + 2R` positions
/// instead of `2(P + R)`; SEALONG's prompts are thousands of tokens and responses hundreds.
///
/// Row `r`'s first response token is predicted by the prompt's last position, token `j > 0` by
/// response position `j - 1`, so the last response token is never an input. `dropout`, when
/// set, keys LoRA dropout masks (`(seed, key)`; the prompt and response passes use distinct
/// derived keys). Rows come back in order, each with all its tokens.
pub fn shared_prompt_hidden(
    decoder: &mut Decoder,
    prompt: &[u32],
    responses: &[&[u32]],
    dropout: Option<(u64, u64)>,
) -> Result<ResponseHidden> {
    use crate::train::lora::set_lora_dropout;
    if prompt.is_empty() || responses.is_empty() || responses.iter().any(|r| r.is_empty()) {
        return Err(Error::Invalid(
            "a shared-prompt batch needs a non-empty prompt and non-empty responses".into(),
        ));
    }
    let n = responses.len();
    let p = prompt.len();
    set_lora_dropout(decoder, dropout.map(|(s, k)| (s, 2 * k)));
    let mut cache = decoder.new_cache(1);
    let prompt_hidden = decoder.forward_hidden(&[prompt.to_vec()], &mut cache);
    let prompt_hidden = match prompt_hidden {
        Ok(h) => h,
        Err(e) => {
            set_lora_dropout(decoder, None);
            return Err(e);
        }
    };
    let d = prompt_hidden.dims()[2];
    let last = prompt_hidden.narrow(1, p - 1, 1).reshape([1, d]);
    // Inputs of the response pass: every response token but the last.
    let inputs = responses.iter().map(|r| r.len() - 1).max().unwrap_or(0);
    let all = if inputs == 0 {
        last
    } else {
        set_lora_dropout(decoder, dropout.map(|(s, k)| (s, 2 * k + 1)));
        let rows = response_input_rows(responses, inputs);
        let mut forked = cache.fork(n);
        let h = decoder.forward_hidden(&rows, &mut forked);
        set_lora_dropout(decoder, None);
        Tensor::cat(vec![last, h?.reshape([n * inputs, d])], 0)
    };
    set_lora_dropout(decoder, None);
    Ok(gather_response_hidden(all, responses, inputs))
}

/// The response pass's input rows: every response token but the last, right-padded with id 0
/// to `inputs` (the longest response's length minus one).
pub(crate) fn response_input_rows(responses: &[&[u32]], inputs: usize) -> Vec<Vec<u32>> {
    responses
        .iter()
        .map(|r| {
            let mut ids = r[..r.len() - 1].to_vec();
            ids.resize(inputs, 0);
            ids
        })
        .collect()
}

/// The rows of `all` (`[1 + n * inputs, d]`: the prompt's last position, then each response's
/// `inputs` input positions) that predict each response token, with the labels: the
/// [`ResponseHidden`] of the shared-prompt forward (plain or checkpointed).
pub(crate) fn gather_response_hidden(all: Tensor<2>, responses: &[&[u32]], inputs: usize) -> ResponseHidden {
    let mut positions = Vec::new();
    let mut labels = Vec::new();
    let mut counts = Vec::with_capacity(responses.len());
    for (r, resp) in responses.iter().enumerate() {
        for (j, &tok) in resp.iter().enumerate() {
            positions.push(if j == 0 { 0 } else { (1 + r * inputs + j - 1) as i32 });
            labels.push(tok);
        }
        counts.push(resp.len());
    }
    let t = positions.len();
    let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [t]), &all.device());
    ResponseHidden {
        hidden: all.select(0, positions),
        labels,
        counts,
    }
}
