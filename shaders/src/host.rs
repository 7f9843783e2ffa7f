//! Host (CPU) building blocks shared by the host kernels of this crate and of the core: run-time
//! instruction-set detection, [`multiversion!`](crate::multiversion) (a loop compiled once more
//! for AVX2+FMA and for AVX-512, the copy picked at run time), and vectorizable math (a
//! polynomial `exp`, 16-lane sums and maxima). The crates are built for baseline x86-64 (SSE2,
//! 4 lanes) and libm's `expf` is one scalar call per element, so host loops over scores or
//! features use these instead. Only the vector width changes between the copies, never the
//! order of operations (no FMA contraction happens in Rust), so every copy gives the same bits.

/// Instruction sets the kernels can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The best instruction set of this CPU (detected once).
pub fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                Isa::Avx512
            } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                Isa::Avx2
            } else {
                Isa::Portable
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Isa::Portable
    }
}

/// Defines `fn $name(args) -> R` that runs `$imp(args)` through a copy compiled for AVX-512 or
/// AVX2+FMA when this CPU has them, else as built. `$imp` must be `#[inline(always)]` so that
/// its body is compiled into each copy.
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident => $imp:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)?) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::host::{isa, Isa};
                #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
                fn avx512($($a: $t),*) $(-> $r)? {
                    $imp($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($a: $t),*) $(-> $r)? {
                    $imp($($a),*)
                }
                match isa() {
                    // SAFETY: `isa()` detected AVX-512 F and BW (and so AVX2 and FMA) at run time.
                    Isa::Avx512 => return unsafe { avx512($($a),*) },
                    // SAFETY: `isa()` detected AVX2 and FMA on this CPU at run time.
                    Isa::Avx2 => return unsafe { avx2($($a),*) },
                    Isa::Portable => {}
                }
            }
            $imp($($a),*)
        }
    };
}

/// `e^x` in f32 without libm (Cephes' expf polynomial, relative error ~2e-7), so loops over it
/// vectorize. Below -87 (where `e^x` would be denormal) it is 0, so `-inf` (a masked score)
/// gives exactly 0; above 88 it saturates at `e^88`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let c = x.clamp(-87.0, 88.0);
    let n = (c * std::f32::consts::LOG2_E + 0.5).floor();
    let r = c - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from the bits of `n + 1.5·2²³`, whose low mantissa bits are `n` (|n| ≤ 127 here):
    // integer lane operations, where `n as i32` (a saturating cast) is a scalar conversion per
    // element and kept the loops around this function from vectorizing.
    let biased = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000 - 127);
    let e = y * f32::from_bits(biased << 23);
    if x < -87.0 { 0.0 } else { e }
}

/// Sum in 16 lanes (vectorizable; a sequential f32 sum is not).
#[inline(always)]
pub fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for &v in rest {
        s += v;
    }
    s
}

/// Maximum in 16 lanes.
#[inline(always)]
pub fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    rest.iter().chain(&acc).copied().fold(f32::NEG_INFINITY, f32::max)
}

/// A matrix operand of [`gemm`]: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Operand<'a> {
    /// Row-major `[rows, cols]` with row stride `rs`.
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        Operand { data, rs, cs: 1 }
    }
    /// The transpose of a row-major matrix with row stride `rs`.
    pub fn transposed(data: &'a [f32], rs: usize) -> Self {
        Operand { data, rs: 1, cs: rs }
    }
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            assert!(
                (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len(),
                "gemm: {what} operand too small for [{rows}, {cols}]"
            );
        }
    }
}

/// `dst[m, n] (+)= scale · a[m, k] b[k, n]` (row stride `dst_rs`; added to `dst` with
/// `accumulate`), through the `gemm` crate's AVX-512 / AVX2 kernels, split across rayon's
/// threads when `parallel` and the product is large.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: Operand<'_>,
    b: Operand<'_>,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "gemm: destination too small for [{m}, {n}]"
    );
    a.check(m, k, "left");
    b.check(k, n, "right");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let par = if parallel && m * n * k >= 1 << 18 {
        ::gemm::Parallelism::Rayon(0)
    } else {
        ::gemm::Parallelism::None
    };
    // SAFETY: the checks above bound every element the strides reach in all three operands,
    // and `dst` does not alias `a` or `b` (a `&mut` and two `&` borrows).
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}
