//! Rotary position embeddings in HF's rotate-half layout: `x * cos + rotate_half(x) * sin`, with
//! `rotate_half(x) = cat(-x2, x1)` over the two halves of each head. Tables are computed once
//! for every position the model allows, in f32 the way HF computes them
//! (`angle = pos * inv_freq`, `emb = cat(angle, angle)`).

use burn::prelude::*;

/// cos/sin tables `[max_positions, head_dim]`; `sin_signed` has the first half negated so the
/// rotation is `x * cos + swap_halves(x) * sin_signed`.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor<2>,
    sin_signed: Tensor<2>,
    pub max_positions: usize,
}

/// The most values one table holds: 64 MiB of f32, 131,072 positions at head dimension 128
/// (Llama-3.1's context). A model's context length is a header field; tables for a hostile or
/// merely huge one would be sized by the file, so positions past this stop with an error
/// naming the limit (the CPU engine computes its rows per forward and has no such limit).
pub const MAX_TABLE_VALUES: usize = 1 << 24;

impl RopeTables {
    /// Tables for `inv_freq`, with cos and sin multiplied by `scaling` (transformers'
    /// `attention_scaling`: YaRN's attention factor, 1 otherwise), for `max_positions`
    /// positions or as many as [`MAX_TABLE_VALUES`] allow, whichever is fewer.
    pub fn new(inv_freq: &[f32], scaling: f32, max_positions: usize, device: &Device) -> Self {
        let half = inv_freq.len();
        let hd = 2 * half;
        let max_positions = max_positions.min(MAX_TABLE_VALUES / hd.max(1));
        let mut cos = vec![0.0f32; max_positions * hd];
        let mut sin = vec![0.0f32; max_positions * hd];
        for p in 0..max_positions {
            for (i, &f) in inv_freq.iter().enumerate() {
                let angle = p as f32 * f;
                let (s, c) = angle.sin_cos();
                let (s, c) = (s * scaling, c * scaling);
                cos[p * hd + i] = c;
                cos[p * hd + half + i] = c;
                sin[p * hd + i] = -s;
                sin[p * hd + half + i] = s;
            }
        }
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, [max_positions, hd]), device),
            sin_signed: Tensor::from_data(TensorData::new(sin, [max_positions, hd]), device),
            max_positions,
        }
    }

    /// The same tables outside autodiff (shared storage).
    pub fn without_autodiff(&self) -> Self {
        RopeTables {
            cos: self.cos.clone().without_autodiff(),
            sin_signed: self.sin_signed.clone().without_autodiff(),
            max_positions: self.max_positions,
        }
    }

    /// Rotates `x` whose sequence positions start at `start`.
    ///
    /// # Shapes
    /// `x`: `[batch, heads, seq_len, head_dim]`.
    pub fn apply(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [_, _, seq_len, hd] = x.dims();
        let cos = self
            .cos
            .clone()
            .slice([start..start + seq_len, 0..hd])
            .reshape([1, 1, seq_len, hd]);
        let sin = self
            .sin_signed
            .clone()
            .slice([start..start + seq_len, 0..hd])
            .reshape([1, 1, seq_len, hd]);
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let swapped = Tensor::cat(vec![x2, x1], 3);
        x * cos + swapped * sin
    }
}
