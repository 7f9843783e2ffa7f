//! chrF as an MBR utility: sacrebleu's `CHRF()` with its defaults (character n-grams up to
//! order 6, no word n-grams, beta 2, case kept, whitespace removed, effective-order averaging
//! rather than epsilon smoothing), sentence level, one hypothesis against one reference.
//!
//! The arithmetic follows sacrebleu 2.x's `CHRF._compute_f_score` operation by operation
//! (integer counts, then precision and recall averaged over the orders where both sides have
//! n-grams), so scores equal the reference's to the last bit; `tests/golden/chrf/` holds its
//! values. Scores are on sacrebleu's scale, 0 to 100.

use std::collections::HashMap;

use crate::text::pystr;

/// Character n-gram orders (sacrebleu's `CHRF.CHAR_ORDER`).
pub const CHAR_ORDER: usize = 6;
/// Recall's weight against precision (sacrebleu's `CHRF.BETA`).
pub const BETA: u32 = 2;

/// One text's character n-gram counts per order 1..=6, whitespace removed as sacrebleu does
/// (`''.join(line.split())`, Python's whitespace).
struct Ngrams {
    /// `counts[n - 1]`: each n-gram of order n (its characters) and how often it occurs.
    counts: Vec<HashMap<Vec<char>, u32>>,
    /// Total n-grams per order (`max(len - n + 1, 0)`).
    totals: [u64; CHAR_ORDER],
}

impl Ngrams {
    fn of(text: &str) -> Self {
        let chars: Vec<char> = text.chars().filter(|&c| !pystr::is_space(c)).collect();
        let mut counts = Vec::with_capacity(CHAR_ORDER);
        let mut totals = [0u64; CHAR_ORDER];
        for n in 1..=CHAR_ORDER {
            let mut m: HashMap<Vec<char>, u32> = HashMap::new();
            for w in chars.windows(n) {
                *m.entry(w.to_vec()).or_insert(0) += 1;
            }
            totals[n - 1] = chars.len().saturating_sub(n - 1) as u64;
            counts.push(m);
        }
        Ngrams { counts, totals }
    }
}

/// `[hyp, ref, match]` counts of one order, as `CHRF._get_match_statistics` returns them: the
/// hypothesis count is 0 when the reference has no n-gram of this order.
fn match_statistics(
    hyp: &HashMap<Vec<char>, u32>,
    hyp_total: u64,
    r: &HashMap<Vec<char>, u32>,
    ref_total: u64,
) -> [u64; 3] {
    let matches: u64 = hyp
        .iter()
        .filter_map(|(ng, &c)| r.get(ng).map(|&rc| u64::from(c.min(rc))))
        .sum();
    [if r.is_empty() { 0 } else { hyp_total }, ref_total, matches]
}

/// `CHRF._compute_f_score` without epsilon smoothing, from per-order `[hyp, ref, match]`.
fn f_score(stats: &[[u64; 3]; CHAR_ORDER]) -> f64 {
    let factor = f64::from(BETA * BETA);
    let (mut avg_prec, mut avg_rec) = (0.0f64, 0.0f64);
    let mut effective_order = 0u32;
    for &[n_hyp, n_ref, n_match] in stats {
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += n_match as f64 / n_hyp as f64;
            avg_rec += n_match as f64 / n_ref as f64;
            effective_order += 1;
        }
    }
    if effective_order == 0 {
        return 0.0;
    }
    avg_prec /= f64::from(effective_order);
    avg_rec /= f64::from(effective_order);
    if avg_prec + avg_rec == 0.0 {
        return 0.0;
    }
    let mut score = (1.0 + factor) * avg_prec * avg_rec;
    score /= (factor * avg_prec) + avg_rec;
    100.0 * score
}

fn score_pair(hyp: &Ngrams, r: &Ngrams) -> f64 {
    let mut stats = [[0u64; 3]; CHAR_ORDER];
    for (k, s) in stats.iter_mut().enumerate() {
        *s = match_statistics(&hyp.counts[k], hyp.totals[k], &r.counts[k], r.totals[k]);
    }
    f_score(&stats)
}

/// sacrebleu's `CHRF().sentence_score(hypothesis, [reference]).score` (0 to 100).
pub fn chrf(hypothesis: &str, reference: &str) -> f64 {
    score_pair(&Ngrams::of(hypothesis), &Ngrams::of(reference))
}

/// The MBR utility matrix, row-major `[n, n]`: `m[i][j] = chrf(texts[i], texts[j])`, answer `i`
/// as the hypothesis and answer `j` as the pseudo-reference (chrF is not symmetric: beta 2
/// weighs recall). Each text's n-grams are counted once.
pub fn chrf_matrix<S: AsRef<str>>(texts: &[S]) -> Vec<f64> {
    let grams: Vec<Ngrams> = texts.iter().map(|t| Ngrams::of(t.as_ref())).collect();
    let n = grams.len();
    let mut m = vec![0.0f64; n * n];
    for (i, h) in grams.iter().enumerate() {
        for (j, r) in grams.iter().enumerate() {
            m[i * n + j] = score_pair(h, r);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_disjoint_and_empty() {
        assert_eq!(chrf("the cat", "the cat"), 100.0);
        // Whitespace is removed before counting: spacing does not matter.
        assert_eq!(chrf("the  cat", "thecat"), 100.0);
        assert_eq!(chrf("abc", "xyz"), 0.0);
        assert_eq!(chrf("", "abc"), 0.0);
        assert_eq!(chrf("abc", ""), 0.0);
        assert_eq!(chrf("", ""), 0.0);
        // Recall weighs more than precision (beta 2). "abc" against "ab": orders 1 and 2 count
        // (the reference has no 3-gram), precision (2/3 + 1/2) / 2, recall 1, F = 87.5;
        // the other way round precision 1, recall 7/12, F = 35/55.
        assert!((chrf("abc", "ab") - 87.5).abs() < 1e-12);
        assert!((chrf("ab", "abc") - 3500.0 / 55.0).abs() < 1e-12);
        let m = chrf_matrix(&["ab", "abc"]);
        assert_eq!(m.len(), 4);
        assert_eq!((m[0], m[3]), (100.0, 100.0));
        assert_eq!(m[1], chrf("ab", "abc"));
        assert_eq!(m[2], chrf("abc", "ab"));
    }
}
