//! Chosen / rejected selection from MBR scores, as SEALONG does it: each of the N sampled answers
//! gets the mean utility of its row of the N×N utility matrix (itself included); the answer with
//! the highest score is *chosen*; the *rejected* one is drawn uniformly from the bottom half (the
//! first ⌊N/2⌋ answers of a stable ascending sort of the scores).
//!
//! Ties follow numpy (what the reference pipeline uses): `argmax` takes the first index of the
//! maximum and `argsort(kind="stable")` keeps equal scores in index order. Row means are summed
//! with numpy's pairwise summation, so the scores equal `sim.mean(axis=1)` bit for bit and near
//! ties resolve as in Python.

use rand::{Rng, RngExt};

use crate::{Error, Result};

/// The outcome of MBR selection for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Per-sample MBR score (mean utility against all samples, itself included).
    pub scores: Vec<f64>,
    /// Index of the highest score (the first one on ties).
    pub chosen: usize,
    /// The bottom ⌊N/2⌋ samples, lowest score first (stable: ties in index order).
    pub rejected_pool: Vec<usize>,
    /// The sample drawn uniformly from `rejected_pool`.
    pub rejected: usize,
}

/// Sum as numpy's `pairwise_sum` for float64 (`np.add.reduce` along a contiguous axis): under 8
/// values a plain loop; up to 128, eight interleaved accumulators combined as
/// ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) then the remainder; above that, split in two halves (the
/// first a multiple of 8 long) and recurse. The rounding therefore matches numpy exactly.
pub fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |acc, &x| acc + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        for chunk in a[8..full].chunks_exact(8) {
            for (acc, &x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            res += x;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// Row means of the N×N row-major matrix `m` (self included): `m.mean(axis=1)` as numpy computes
/// it. Errors when `m` is not N×N.
pub fn scores_from_matrix(m: &[f64], n: usize) -> Result<Vec<f64>> {
    if n.checked_mul(n) != Some(m.len()) {
        return Err(Error::Invalid(format!(
            "MBR utility matrix has {} values, expected {n}×{n} = {}",
            m.len(),
            n.saturating_mul(n)
        )));
    }
    Ok(m.chunks_exact(n.max(1)).map(|row| numpy_sum(row) / n as f64).collect())
}

/// The first index of the largest value (`np.argmax`), `None` when empty. NaN never wins here;
/// [`select`] rejects NaN before calling it.
pub fn first_argmax(scores: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &s) in scores.iter().enumerate() {
        if best.is_none_or(|b| s > scores[b]) {
            best = Some(i);
        }
    }
    best
}

/// Indices sorted by ascending score, equal scores in index order (`np.argsort(kind="stable")`;
/// -0.0 and 0.0 count as equal, as in numpy). Scores must not be NaN.
pub fn ascending_order(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap_or(std::cmp::Ordering::Equal));
    order
}

/// Errors for fewer than 2 samples or a NaN score (naming the sample).
pub(crate) fn check(scores: &[f64]) -> Result<()> {
    if scores.len() < 2 {
        return Err(Error::Invalid(format!(
            "MBR needs at least 2 samples per question to pick a chosen and a rejected answer, got {}",
            scores.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Invalid(format!("MBR score of sample {i} is NaN")));
    }
    Ok(())
}

/// Chosen = first argmax of `scores`; rejected = uniform draw from the bottom ⌊N/2⌋ (one
/// `random_range` call on `rng`). Errors for fewer than 2 samples or a NaN score (naming the
/// sample). With N = 2 the pool is the lower-scored sample.
///
/// Note: when the top score ties with the bottom half (e.g. all scores equal, or N = 2 with a
/// tie), chosen and rejected can be the same sample: chosen is the first index of the maximum and
/// the stable sort puts that index first among equals, too. Callers that need a usable preference
/// pair should check `chosen != rejected`.
pub fn select(scores: &[f64], rng: &mut impl Rng) -> Result<Selection> {
    check(scores)?;
    let chosen = first_argmax(scores).unwrap_or(0);
    let mut rejected_pool = ascending_order(scores);
    rejected_pool.truncate(scores.len() / 2);
    let rejected = rejected_pool[rng.random_range(0..rejected_pool.len())];
    Ok(Selection {
        scores: scores.to_vec(),
        chosen,
        rejected_pool,
        rejected,
    })
}

/// [`scores_from_matrix`] then [`select`].
pub fn select_from_matrix(m: &[f64], n: usize, rng: &mut impl Rng) -> Result<Selection> {
    let scores = scores_from_matrix(m, n)?;
    select(&scores, rng)
}

/// The "random" baseline: chosen is a uniform draw from all `n` samples, rejected a uniform draw
/// from the other `n - 1` (so they always differ). The returned selection has all-zero scores
/// and the pool holds every sample but the chosen one, in index order. Needs n ≥ 2.
pub fn select_random(n: usize, rng: &mut impl Rng) -> Result<Selection> {
    check(&vec![0.0; n])?;
    let chosen = rng.random_range(0..n);
    let rejected_pool: Vec<usize> = (0..n).filter(|&i| i != chosen).collect();
    let rejected = rejected_pool[rng.random_range(0..rejected_pool.len())];
    Ok(Selection {
        scores: vec![0.0; n],
        chosen,
        rejected_pool,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::for_item;

    #[test]
    fn pairwise_sum_shapes() {
        let a: Vec<f64> = (0..300).map(|k| 1.0 / (k as f64 + 1.0)).collect();
        for n in [0, 1, 7, 8, 9, 16, 17, 128, 129, 300] {
            let s = numpy_sum(&a[..n]);
            let naive: f64 = a[..n].iter().sum();
            assert!((s - naive).abs() < 1e-12, "n {n}");
        }
        // Eight accumulators: 1e16 + 1 + ... differs from left-to-right summation.
        let mut v = vec![1.0; 9];
        v[0] = 1e16;
        assert_eq!(numpy_sum(&v), 1e16 + 8.0);
    }

    #[test]
    fn select_basics() {
        let mut rng = for_item(0, "t");
        let s = select(&[0.5, 0.9, 0.1, 0.9], &mut rng).expect("select");
        assert_eq!(s.chosen, 1);
        assert_eq!(s.rejected_pool, [2, 0]);
        assert!(select(&[1.0], &mut rng).is_err());
        let e = select(&[1.0, f64::NAN], &mut rng).expect_err("nan");
        assert!(e.to_string().contains("sample 1"), "{e}");
    }
}
