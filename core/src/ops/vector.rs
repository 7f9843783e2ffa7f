//! Vectorizable math for host loops, and the run-time instruction-set dispatch that makes it
//! fast. The crate is built for baseline x86-64 (SSE2, 4 lanes), and libm's `expf` is one
//! scalar call per element: a softmax over a 4k-token row of scores, or SwiGLU over 1,536
//! features, spent most of its time in those calls. So:
//! - [`exp_f32`] is a polynomial with plain multiplies and adds, which LLVM vectorizes;
//! - reductions run in 16 independent lanes ([`lane_sum`], [`exp_shift_row`]): a plain
//!   `fold`/`sum` is one chain of dependent scalar operations, since floating-point reductions
//!   are never reordered by the compiler;
//! - [`multiversion!`] compiles a loop once more for AVX2+FMA and once for AVX-512 and picks
//!   the copy at run time. Only the vector width changes between the copies, never the order of
//!   operations (no FMA contraction happens in Rust), so every copy gives the same bits.

pub use sealong_shaders::host::{exp_f32, lane_max, lane_sum};
pub(crate) use sealong_shaders::multiversion;

#[inline(always)]
fn exp_shift_row_impl(row: &mut [f32]) -> (f32, f32) {
    let m = lane_max(row);
    if m == f32::NEG_INFINITY {
        row.iter_mut().for_each(|v| *v = 0.0);
        return (m, 0.0);
    }
    row.iter_mut().for_each(|v| *v = exp_f32(*v - m));
    (m, lane_sum(row))
}

multiversion!(
    /// A row's maximum `m`, the row replaced by `e^(x - m)`, and the sum of those (the
    /// unnormalized softmax). `-inf` entries become 0; a row of only `-inf` becomes zeros, sum 0.
    pub fn exp_shift_row => exp_shift_row_impl(row: &mut [f32]) -> (f32, f32)
);

#[inline(always)]
fn swiglu_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp_f32(-g)) * u;
    }
}

multiversion!(
    /// `out = silu(gate) * up` elementwise.
    pub fn swiglu => swiglu_impl(gate: &[f32], up: &[f32], out: &mut [f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm_and_exact_at_the_ends() {
        let mut worst = 0.0f64;
        for i in -20_000..=2_000 {
            let x = i as f32 / 200.0; // -100 .. 10
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            if x >= -87.0 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert_eq!(got, 0.0, "exp({x})");
            }
        }
        assert!(worst < 5e-7, "exp relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn lane_reductions() {
        let x: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(lane_sum(&x), (0..37).sum::<i32>() as f32);
        assert_eq!(lane_max(&x), 36.0);
        assert_eq!(lane_max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn exp_shift_row_is_the_unnormalized_softmax_and_the_same_in_every_copy() {
        for n in [1usize, 7, 16, 33, 256, 1000] {
            let row: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 5 == 3 {
                        f32::NEG_INFINITY
                    } else {
                        ((i * 37 % 101) as f32 - 50.0) / 7.0
                    }
                })
                .collect();
            let mut got = row.clone();
            let (m, s) = exp_shift_row(&mut got);
            let mut portable = row.clone();
            assert_eq!(
                exp_shift_row_impl(&mut portable),
                (m, s),
                "n = {n}: the dispatched copy differs"
            );
            assert_eq!(portable, got);
            let want_m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(m, want_m, "n = {n}");
            let mut want_s = 0.0f64;
            for (g, &x) in got.iter().zip(&row) {
                let w = (f64::from(x) - f64::from(m)).exp();
                want_s += w;
                // The f32 difference x - m is rounded (|x - m| up to ~15 here), then exp adds
                // its own error.
                assert!((f64::from(*g) - w).abs() <= 2e-6 * w.max(1e-30), "n = {n}: {g} vs {w}");
            }
            assert!(
                (f64::from(s) - want_s).abs() <= 1e-6 * want_s,
                "n = {n}: sum {s} vs {want_s}"
            );
        }
        let mut masked = vec![f32::NEG_INFINITY; 5];
        assert_eq!(exp_shift_row(&mut masked), (f32::NEG_INFINITY, 0.0));
        assert_eq!(masked, vec![0.0; 5]);
    }

    #[test]
    fn swiglu_matches_the_formula() {
        let g: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) / 4.0).collect();
        let u: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut out = vec![0.0f32; 100];
        swiglu(&g, &u, &mut out);
        for ((o, &g), &u) in out.iter().zip(&g).zip(&u) {
            let want = f64::from(g) / (1.0 + (-f64::from(g)).exp()) * f64::from(u);
            assert!(
                (f64::from(*o) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{o} vs {want}"
            );
        }
    }
}
