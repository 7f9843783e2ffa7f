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
    let e = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
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
