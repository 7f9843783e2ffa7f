//! One named weight as the loaders hand it over: row-major f32, or a 2-D matrix kept in its
//! block format. It lives here, below `nn` and `models`, because both the building blocks
//! (`nn::linear`) and every model's loader take it; neither should import the other for it.

use std::sync::Arc;

use crate::quant::QuantMatrix;

/// A weight's values.
#[derive(Clone)]
pub enum WeightData {
    /// Row-major f32.
    Dense(Arc<[f32]>),
    /// A 2-D matrix in a block format (rows = output features).
    Quant(QuantMatrix),
}

/// One named weight.
#[derive(Clone)]
pub struct Weight {
    /// HF name (e.g. `model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Row-major shape, outermost first (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    pub data: WeightData,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.data {
            WeightData::Dense(_) => "f32".to_string(),
            WeightData::Quant(q) => format!("{:?}", q.format),
        };
        write!(f, "Weight({}, {:?}, {kind})", self.name, self.shape)
    }
}

impl Weight {
    /// Values as f32 (dequantized if needed).
    pub fn to_f32(&self) -> Arc<[f32]> {
        match &self.data {
            WeightData::Dense(v) => v.clone(),
            WeightData::Quant(q) => q.to_f32().into(),
        }
    }
}
