//! Self-evaluation through the decoder (paper Tab. 10): the reference-free judge rates each
//! answer 1..5 given the context (a scorer), and the reference-based judge says whether two
//! answers give the same answer (an MBR utility, True = 1, False = 0). Greedy decoding.
//!
//! The N judge prompts of one question share a long beginning (the context for the
//! reference-free judge), so their longest common token prefix is prefilled once and each
//! prompt continues from a fork of it.

use crate::error::{Error, Result};
use crate::generate::{self, GenerateOptions, SamplingParams};
use crate::loading::TextAssets;
use crate::models::decoder::LanguageModel;
use crate::text::prompts;

/// A decoder used as a judge.
pub struct Judge<'a, M: LanguageModel> {
    pub model: &'a M,
    pub text: &'a TextAssets,
    pub stop_ids: Vec<u32>,
    /// Most tokens of the reference-free judge's explanation and rating.
    pub max_new_tokens: usize,
}

/// What the judges answered, for the scored record.
#[derive(Debug, Clone, Default)]
pub struct JudgeOutput {
    /// The per-sample scores (ratings) or the utility matrix.
    pub values: Vec<f64>,
    /// Judge replies that held no rating / no True or False (counted as 0).
    pub unparsed: usize,
    /// Judge calls made.
    pub calls: usize,
}

impl<M: LanguageModel> Judge<'_, M> {
    /// Reference-free ratings (1..5; 0 when the reply has none) of each prediction.
    pub fn rate(&self, context: &str, question: &str, predictions: &[String]) -> Result<JudgeOutput> {
        let prompts = predictions
            .iter()
            .map(|p| prompts::reference_free_evaluation(context, question, p))
            .collect::<Vec<_>>();
        let replies = self.greedy_all(&prompts, self.max_new_tokens)?;
        let mut out = JudgeOutput {
            calls: replies.len(),
            ..Default::default()
        };
        for r in &replies {
            match parse_rating(r) {
                Some(v) => out.values.push(f64::from(v)),
                None => {
                    out.unparsed += 1;
                    out.values.push(0.0);
                }
            }
        }
        Ok(out)
    }

    /// `M[i][j]` = 1 when the judge says prediction `i` gives the same answer as reference `j`.
    /// The diagonal (an answer against itself) is 1 without asking.
    pub fn same_answer_matrix(&self, question: &str, predictions: &[String]) -> Result<JudgeOutput> {
        let n = predictions.len();
        let mut out = JudgeOutput {
            values: vec![0.0; n * n],
            ..Default::default()
        };
        for j in 0..n {
            // Prompts with reference j share their beginning (question + reference).
            let others: Vec<usize> = (0..n).filter(|&i| i != j).collect();
            let prompts: Vec<String> = others
                .iter()
                .map(|&i| prompts::reference_based_evaluation(question, &predictions[j], &predictions[i]))
                .collect();
            let replies = self.greedy_all(&prompts, 4)?;
            out.calls += replies.len();
            for (&i, r) in others.iter().zip(&replies) {
                out.values[i * n + j] = match parse_true_false(r) {
                    Some(b) => f64::from(u8::from(b)),
                    None => {
                        out.unparsed += 1;
                        0.0
                    }
                };
            }
            out.values[j * n + j] = 1.0;
        }
        Ok(out)
    }

    /// Greedy replies to each user message, sharing the prefill of their common token prefix.
    fn greedy_all(&self, messages: &[String], max_new_tokens: usize) -> Result<Vec<String>> {
        let ids = messages
            .iter()
            .map(|m| self.text.chat_prompt(m).map(|(_, ids)| ids))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = ids.first() else {
            return Ok(Vec::new());
        };
        let min_len = ids.iter().map(Vec::len).min().unwrap_or(0);
        // Leave at least one token per prompt to produce its own logits.
        let mut common = first.len().min(min_len.saturating_sub(1));
        for other in &ids[1..] {
            common = common.min(first.iter().zip(other).take_while(|(a, b)| a == b).count());
        }
        let options = GenerateOptions {
            sampling: SamplingParams {
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
            },
            max_new_tokens,
            stop_ids: self.stop_ids.clone(),
        };
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        generate::check_context(self.model, longest, max_new_tokens)?;
        generate::in_pool(|| {
            let prefix = if common > 0 {
                Some(generate::prefill(self.model, &first[..common])?)
            } else {
                None
            };
            ids.iter()
                .map(|p| {
                    let (cache, logits) = match &prefix {
                        Some((c, _)) => {
                            let mut cache = self.model.fork(c, 1)?;
                            let logits = generate::extend(self.model, &mut cache, &p[common..])?;
                            (cache, logits)
                        }
                        None => generate::prefill(self.model, p)?,
                    };
                    let mut rng = [crate::rng::for_item(0, "judge")];
                    let c = generate::decode(self.model, cache, logits, &options, &mut rng, |_| {})?;
                    let body: Vec<u32> = c[0]
                        .ids
                        .iter()
                        .copied()
                        .filter(|id| !self.stop_ids.contains(id))
                        .collect();
                    self.text.tokenizer.decode(&body, true)
                })
                .collect::<Result<Vec<_>>>()
        })
    }
}

/// The last `[[n]]` with `n` in 1..=5 (the requested format), if any.
pub fn parse_rating(reply: &str) -> Option<u8> {
    let mut found = None;
    let b = reply.as_bytes();
    for i in 0..b.len().saturating_sub(4) {
        if &b[i..i + 2] == b"[[" && b[i + 2].is_ascii_digit() && &b[i + 3..i + 5] == b"]]" {
            let v = b[i + 2] - b'0';
            if (1..=5).contains(&v) {
                found = Some(v);
            }
        }
    }
    found
}

/// The first "true" or "false" (any case) in the reply.
pub fn parse_true_false(reply: &str) -> Option<bool> {
    let l = reply.to_lowercase();
    match (l.find("true"), l.find("false")) {
        (Some(t), Some(f)) => Some(t < f),
        (Some(_), None) => Some(true),
        (None, Some(_)) => Some(false),
        (None, None) => None,
    }
}

/// Checks a judge can see a context (reference-free needs the question and its context).
pub fn context_of<'a>(context: Option<&'a str>, id: &str) -> Result<&'a str> {
    context.ok_or_else(|| {
        Error::Invalid(format!(
            "record {id:?}: self-eval needs the question and its context; the record has no \"question\" field \
             matching its prompt"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ratings_and_verdicts() {
        assert_eq!(parse_rating("ok. Rating: [[4]]"), Some(4));
        assert_eq!(parse_rating("[[2]] then Rating: [[5]]"), Some(5));
        assert_eq!(parse_rating("Rating: [[9]]"), None);
        assert_eq!(parse_rating("Rating: 4"), None);
        assert_eq!(parse_rating("[[3]]"), Some(3));
        assert_eq!(parse_true_false("True."), Some(true));
        assert_eq!(parse_true_false("FALSE"), Some(false));
        assert_eq!(parse_true_false("False, not true"), Some(false));
        assert_eq!(parse_true_false("maybe"), None);
    }
}
