//! Next-token choice: greedy (temperature 0: the first argmax) or sampling with temperature,
//! top-k and top-p, as vLLM applies them (scale by 1/temperature, keep the top-k, keep the
//! smallest set whose probability reaches top-p, renormalize, draw).

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Sampling parameters (the paper: temperature 0.7, top-p 1.0, top-k off).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 means off.
    pub top_p: f32,
    /// 0 means off.
    pub top_k: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!("top-p must be in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// The first index of the largest value (NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Checks that a row of logits can choose a token: no NaN, no `+inf`, and at least one finite
/// value (`-inf` alone is a masked token). A model whose forward pass overflowed gives rows
/// like these, and choosing from them would silently produce token 0 (or the first `+inf`).
pub fn check_logits(logits: &[f32]) -> Result<()> {
    if logits.is_empty() {
        return Err(Error::Invalid("the logits row is empty".into()));
    }
    let nan = logits.iter().filter(|v| v.is_nan()).count();
    let pos_inf = logits.iter().filter(|&&v| v == f32::INFINITY).count();
    if nan > 0 || pos_inf > 0 {
        let first = logits
            .iter()
            .position(|v| v.is_nan() || *v == f32::INFINITY)
            .unwrap_or(0);
        return Err(Error::Invalid(format!(
            "the model produced non-finite logits ({nan} NaN and {pos_inf} +inf of {} values, the first at token id \
             {first}); the forward pass overflowed or the weights hold NaN",
            logits.len()
        )));
    }
    if !logits.iter().any(|v| v.is_finite()) {
        return Err(Error::Invalid(format!(
            "every one of the {} logits is -inf: no token can be chosen",
            logits.len()
        )));
    }
    Ok(())
}

/// Chooses the next token from one row of logits. Rows that cannot choose a token
/// ([`check_logits`]) are an error, never token 0.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> Result<u32> {
    check_logits(logits)?;
    if params.is_greedy() {
        return Ok(argmax(logits));
    }
    let inv_t = 1.0 / params.temperature;
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i as u32, v * inv_t))
        .collect();
    if cand.is_empty() {
        return Ok(argmax(logits));
    }
    // Sorting by descending logit, ties by id, makes the draw independent of input order.
    let by_value = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if params.top_k > 0 && params.top_k < cand.len() {
        cand.select_nth_unstable_by(params.top_k - 1, by_value);
        cand.truncate(params.top_k);
    }
    let needs_sort = params.top_p < 1.0;
    if needs_sort {
        cand.sort_unstable_by(by_value);
    }
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = cand.iter().map(|c| f64::from(c.1 - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    if needs_sort {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p / total;
            if cum >= f64::from(params.top_p) {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        cand.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u: f64 = rng.random::<f64>() * total;
    for (c, p) in cand.iter().zip(&probs) {
        u -= p;
        if u < 0.0 {
            return Ok(c.0);
        }
    }
    Ok(cand.last().map_or(0, |c| c.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        let mut r = rng::for_item(0, "x");
        assert_eq!(
            sample(&[0.0, 5.0, 5.0], &SamplingParams::greedy(), &mut r).expect("finite"),
            1
        );
    }

    /// Issue 17: NaN or infinite logits made greedy decoding emit token 0 without a word.
    #[test]
    fn non_finite_logits_are_an_error_not_token_0() {
        let sampled = SamplingParams {
            temperature: 0.7,
            top_p: 1.0,
            top_k: 0,
        };
        let mut r = rng::for_item(0, "nan");
        let cases: [(&str, Vec<f32>, &str); 5] = [
            (
                "all NaN",
                vec![f32::NAN; 8],
                "8 NaN and 0 +inf of 8 values, the first at token id 0",
            ),
            (
                "one NaN",
                vec![1.0, 2.0, f32::NAN, 0.5],
                "1 NaN and 0 +inf of 4 values, the first at token id 2",
            ),
            (
                "+inf",
                vec![0.0, f32::INFINITY, 3.0],
                "0 NaN and 1 +inf of 3 values, the first at token id 1",
            ),
            (
                "all -inf",
                vec![f32::NEG_INFINITY; 5],
                "every one of the 5 logits is -inf",
            ),
            ("empty", vec![], "the logits row is empty"),
        ];
        for (what, logits, want) in cases {
            for params in [SamplingParams::greedy(), sampled] {
                let e = sample(&logits, &params, &mut r).expect_err(what).to_string();
                assert!(e.contains(want), "{what}: {e}");
            }
        }
        // -inf entries next to finite ones are masked tokens, not an error.
        let masked = [f32::NEG_INFINITY, -1.0, f32::NEG_INFINITY];
        assert_eq!(sample(&masked, &SamplingParams::greedy(), &mut r).expect("finite"), 1);
        assert_eq!(sample(&masked, &sampled, &mut r).expect("finite"), 1);
    }

    #[test]
    fn sampling_follows_the_distribution_and_is_seeded() {
        let logits = [0.0f32, (2.0f32).ln(), f32::NEG_INFINITY];
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
        };
        let mut r = rng::for_item(7, "s");
        let n = 30_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, &params, &mut r).expect("finite") == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 2.0 / 3.0).abs() < 0.02, "{frac}");
        let a: Vec<u32> = {
            let mut r = rng::for_item(1, "a");
            (0..20)
                .map(|_| sample(&logits, &params, &mut r).expect("finite"))
                .collect()
        };
        let b: Vec<u32> = {
            let mut r = rng::for_item(1, "a");
            (0..20)
                .map(|_| sample(&logits, &params, &mut r).expect("finite"))
                .collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut r = rng::for_item(3, "k");
        let k1 = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 1,
        };
        assert!((0..100).all(|_| sample(&logits, &k1, &mut r).expect("finite") == 0));
        // p(0) = 0.64 < 0.7 <= p(0) + p(1): only ids 0 and 1 remain.
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.7,
            top_k: 0,
        };
        assert!((0..500).all(|_| sample(&logits, &p, &mut r).expect("finite") < 2));
    }
}
