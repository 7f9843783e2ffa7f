//! Generation: prefill a prompt in chunks, then decode one stream, or N streams as one batch
//! over the shared prompt prefix (the prompt is prefilled once, never N times). Streams that
//! stop leave the batch.

pub mod prompt;
pub mod sampler;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::decoder::LanguageModel;
use crate::rng::Rng;
pub use sampler::SamplingParams;

/// Prompt tokens per prefill forward: bounds the attention score memory
/// (`heads * chunk * context` floats) while keeping the GEMMs large.
pub const PREFILL_CHUNK: usize = 512;

/// Why a stream ended (OpenAI/vLLM vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    /// Generated ids, the stop token included when there was one.
    pub ids: Vec<u32>,
    pub finish_reason: FinishReason,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// Ids that end a stream.
    pub stop_ids: Vec<u32>,
}

/// Prefills `prompt` into a fresh single-stream cache in chunks; returns the cache and the logits
/// after the last prompt token.
pub fn prefill<M: LanguageModel>(model: &M, prompt: &[u32]) -> Result<(M::Cache, Vec<f32>)> {
    let mut cache = model.new_cache(1);
    let logits = extend(model, &mut cache, prompt)?;
    Ok((cache, logits))
}

/// Appends `ids` to a single-stream `cache` in chunks (continuing a prefill, e.g. after a shared
/// prefix); returns the logits after the last id.
pub fn extend<M: LanguageModel>(model: &M, cache: &mut M::Cache, ids: &[u32]) -> Result<Vec<f32>> {
    if ids.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    let mut last = None;
    for chunk in ids.chunks(PREFILL_CHUNK) {
        last = Some(model.forward_last(&[chunk.to_vec()], cache)?);
    }
    let mut rows = last.ok_or_else(|| Error::Invalid("empty prompt".into()))?;
    Ok(rows.remove(0))
}

/// Checks that the prompt and the continuation fit the model's context.
pub fn check_context<M: LanguageModel>(model: &M, prompt_len: usize, max_new_tokens: usize) -> Result<()> {
    let max = model.config().max_position_embeddings;
    if prompt_len + max_new_tokens > max {
        return Err(Error::Invalid(format!(
            "the prompt has {prompt_len} tokens; with {max_new_tokens} new tokens that exceeds the model's context of {max} \
             (use --truncate-middle to cut the middle of the context, or lower --max-new-tokens)"
        )));
    }
    Ok(())
}

/// Generates one continuation per entry of `rngs` (N = `rngs.len()`), all from `prompt`.
/// `on_token` is called once per decode step with the number of tokens produced in it.
pub fn generate<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    options: &GenerateOptions,
    rngs: &mut [Rng],
    on_token: impl FnMut(usize) + Send,
) -> Result<Vec<Continuation>> {
    // Run the whole loop on a rayon worker: the kernels' parallel loops then split work with a
    // `join` among hot workers instead of waking the pool from outside and putting this thread
    // to sleep at every matrix product (tens of microseconds each, hundreds per token).
    in_pool(|| generate_on_worker(model, prompt, options, rngs, on_token))
}

/// Several generation runs over one prompt (e.g. an evaluation's greedy answer and its N
/// samples): the prompt is prefilled once and each run decodes from its own copy of the cache.
/// Returns each run's continuations in order.
pub fn generate_runs<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    runs: &mut [(&GenerateOptions, &mut [Rng])],
    mut on_token: impl FnMut(usize) + Send,
) -> Result<Vec<Vec<Continuation>>>
where
    M::Cache: Clone,
{
    in_pool(|| {
        for (options, rngs) in runs.iter() {
            options.sampling.validate()?;
            if rngs.is_empty() {
                return Err(Error::Invalid("at least one sample is needed".into()));
            }
            check_context(model, prompt.len(), options.max_new_tokens)?;
        }
        let (cache, logits) = prefill(model, prompt)?;
        let mut out = Vec::with_capacity(runs.len());
        for (options, rngs) in runs.iter_mut() {
            out.push(decode(
                model,
                cache.clone(),
                logits.clone(),
                options,
                rngs,
                &mut on_token,
            )?);
        }
        Ok(out)
    })
}

/// Runs `f` on a thread of rayon's global pool (or directly, if already on one).
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

fn generate_on_worker<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    options: &GenerateOptions,
    rngs: &mut [Rng],
    on_token: impl FnMut(usize) + Send,
) -> Result<Vec<Continuation>> {
    options.sampling.validate()?;
    if rngs.is_empty() {
        return Err(Error::Invalid("at least one sample is needed".into()));
    }
    check_context(model, prompt.len(), options.max_new_tokens)?;
    let (cache, logits) = prefill(model, prompt)?;
    decode(model, cache, logits, options, rngs, on_token)
}

/// Decodes `rngs.len()` streams from a prefilled single-stream `cache` whose last logits are
/// `logits` (the prompt is shared, not copied, when there are several streams).
pub fn decode<M: LanguageModel>(
    model: &M,
    cache: M::Cache,
    logits: Vec<f32>,
    options: &GenerateOptions,
    rngs: &mut [Rng],
    mut on_token: impl FnMut(usize) + Send,
) -> Result<Vec<Continuation>> {
    let n = rngs.len();
    let mut outs: Vec<Continuation> = (0..n)
        .map(|_| Continuation {
            ids: Vec::new(),
            finish_reason: FinishReason::Length,
        })
        .collect();
    if options.max_new_tokens == 0 || n == 0 {
        return Ok(outs);
    }
    let mut cache = if n == 1 { cache } else { model.fork(&cache, n)? };
    // Streams still running, in cache row order.
    let mut active: Vec<usize> = (0..n).collect();
    let mut rows: Vec<Vec<f32>> = vec![logits; n];
    loop {
        let mut next = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (row, &s) in active.iter().enumerate() {
            let tok = sampler::sample(&rows[row], &options.sampling, &mut rngs[s]).map_err(|e| {
                Error::Invalid(format!(
                    "decode step {} (stream {} of {n}): {e}",
                    outs[s].ids.len() + 1,
                    s + 1
                ))
            })?;
            outs[s].ids.push(tok);
            if options.stop_ids.contains(&tok) {
                outs[s].finish_reason = FinishReason::Stop;
            } else if outs[s].ids.len() < options.max_new_tokens {
                keep.push(row);
                next.push(vec![tok]);
            }
        }
        on_token(active.len());
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            model.retain(&mut cache, &keep);
            active = keep.iter().map(|&r| active[r]).collect();
        }
        rows = model.forward_last(&next, &mut cache)?;
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::decoder::DecoderConfig;

    /// A model whose logits favour token 1 until step `nan_from`, then are all NaN.
    struct Fake {
        config: DecoderConfig,
        nan_from: usize,
    }

    impl LanguageModel for Fake {
        /// Tokens seen so far.
        type Cache = usize;
        fn new_cache(&self, _batch: usize) -> usize {
            0
        }
        fn forward_last(&self, ids: &[Vec<u32>], cache: &mut usize) -> Result<Vec<Vec<f32>>> {
            *cache += ids[0].len();
            let row = if *cache >= self.nan_from {
                vec![f32::NAN; 4]
            } else {
                vec![0.0, 1.0, 0.0, 0.0]
            };
            Ok(vec![row; ids.len()])
        }
        fn fork(&self, cache: &usize, _n: usize) -> Result<usize> {
            Ok(*cache)
        }
        fn retain(&self, _cache: &mut usize, _rows: &[usize]) {}
        fn config(&self) -> &DecoderConfig {
            &self.config
        }
    }

    /// Issue 17: NaN logits became token 0; now the error names the decode step.
    #[test]
    fn nan_logits_stop_generation_with_the_step() {
        let config = DecoderConfig::from_hf_json(
            &serde_json::json!({"model_type": "llama", "vocab_size": 4, "hidden_size": 8,
                "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "max_position_embeddings": 64}),
            "fake",
        )
        .expect("config");
        // A 3-token prompt: steps 1-3 choose from finite logits (after 3, 4, 5 tokens); the
        // logits after the 6th token, which step 4 chooses from, are NaN.
        let model = Fake { config, nan_from: 6 };
        let options = GenerateOptions {
            sampling: SamplingParams::greedy(),
            max_new_tokens: 10,
            stop_ids: vec![3],
        };
        for n in [1, 2] {
            let mut rngs: Vec<Rng> = (0..n).map(|i| crate::rng::for_item(0, &i.to_string())).collect();
            let e = generate(&model, &[0, 1, 2], &options, &mut rngs, |_| {})
                .expect_err("NaN logits")
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "decode step 4 (stream 1 of {n}): the model produced non-finite logits (4 NaN"
                )),
                "{e}"
            );
        }
        // Finite all the way: ten tokens of 1.
        let model = Fake {
            nan_from: usize::MAX,
            ..model
        };
        let mut rngs = [crate::rng::for_item(0, "x")];
        let out = generate(&model, &[0, 1, 2], &options, &mut rngs, |_| {}).expect("finite");
        assert_eq!(out[0].ids, vec![1; 10]);
    }
}
