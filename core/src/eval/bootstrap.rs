//! Bootstrap confidence intervals for per-question scores (SubEM 0/1, expected values in
//! [0, 1]): the mean with a 95% percentile interval, and the paired bootstrap of a difference
//! between two methods scored on the same questions (each resample draws questions, and both
//! methods' scores of a drawn question move together). Seeded, so a table is reproducible.

use rand::RngExt;

use crate::error::{Error, Result};
use crate::rng;

/// Resamples used unless a caller asks for another count.
pub const DEFAULT_RESAMPLES: usize = 10_000;

/// A mean with its 95% interval (the 2.5th and 97.5th percentiles of the resampled means).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// The paired comparison of `a` against `b`: the mean difference a − b with its interval, and
/// the share of resamples in which the difference is ≤ 0 (a one-sided bootstrap p-value for
/// "a is better").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    pub diff: Interval,
    pub p_not_better: f64,
}

/// The mean of `values` with its bootstrap interval; `None` for no values.
pub fn mean_ci(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    let mean = mean(values)?;
    let mut r = rng::for_item(seed, "bootstrap-mean");
    let means: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            (0..values.len())
                .map(|_| values[r.random_range(0..values.len())])
                .sum::<f64>()
                / values.len() as f64
        })
        .collect();
    let (lo, hi) = percentiles(means);
    Some(Interval { mean, lo, hi })
}

/// The paired bootstrap of `a` − `b` over the same questions (`a[i]` and `b[i]` belong to
/// question i); an error when the lengths differ or there are no questions.
pub fn paired(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Result<Paired> {
    if a.len() != b.len() {
        return Err(Error::Invalid(format!(
            "a paired comparison needs the same questions: {} scores against {}",
            a.len(),
            b.len()
        )));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = mean(&d).ok_or_else(|| Error::Invalid("a paired comparison of no questions".into()))?;
    let mut r = rng::for_item(seed, "bootstrap-paired");
    let diffs: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..d.len()).map(|_| d[r.random_range(0..d.len())]).sum::<f64>() / d.len() as f64)
        .collect();
    let p_not_better = diffs.iter().filter(|&&x| x <= 0.0).count() as f64 / diffs.len() as f64;
    let (lo, hi) = percentiles(diffs);
    Ok(Paired {
        diff: Interval { mean, lo, hi },
        p_not_better,
    })
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The 2.5th and 97.5th percentiles (nearest rank) of `v`.
fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::{mean_ci, paired};

    #[test]
    fn intervals_cover_the_mean_shrink_with_n_and_are_reproducible() {
        // 30% correct of 100 and of 1,000: the normal approximation's half-widths are 0.090 and
        // 0.028; the bootstrap's must be near them (within 25%).
        for (n, half) in [(100usize, 0.0898), (1000, 0.0284)] {
            let v: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i % 10 < 3))).collect();
            let ci = mean_ci(&v, 4000, 1).expect("ci");
            assert!((ci.mean - 0.3).abs() < 1e-12);
            assert!(ci.lo < 0.3 && ci.hi > 0.3);
            let got = (ci.hi - ci.lo) / 2.0;
            assert!((got - half).abs() < 0.25 * half, "n {n}: half-width {got} vs {half}");
            assert_eq!(Some(ci), mean_ci(&v, 4000, 1), "same seed, same interval");
        }
        assert_eq!(mean_ci(&[], 10, 1), None);
        // All equal: a zero-width interval.
        let c = mean_ci(&[1.0; 7], 100, 3).expect("ci");
        assert_eq!((c.lo, c.mean, c.hi), (1.0, 1.0, 1.0));
    }

    #[test]
    fn the_paired_bootstrap_sees_a_consistent_gain_that_unpaired_intervals_miss() {
        // b is a with 10 of 200 questions flipped to wrong: a is better on exactly those.
        let a: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 2 == 0))).collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| if i < 20 && x == 1.0 { 0.0 } else { x })
            .collect();
        let p = paired(&a, &b, 4000, 2).expect("paired");
        assert!((p.diff.mean - 0.05).abs() < 1e-12);
        assert!(p.diff.lo > 0.0, "the interval excludes no gain: {p:?}");
        // A resample shows no gain only if it draws none of the 10 questions: 0.95^200 = 4e-5.
        assert!(p.p_not_better < 1e-3, "{p:?}");
        // Unpaired, the two 95% intervals overlap.
        let (ia, ib) = (mean_ci(&a, 4000, 2).expect("a"), mean_ci(&b, 4000, 2).expect("b"));
        assert!(ib.hi > ia.lo);
        let e = paired(&a, &b[..10], 10, 1).expect_err("lengths differ");
        assert!(e.to_string().contains("200 scores against 10"), "{e}");
    }
}
