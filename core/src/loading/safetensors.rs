//! Reading safetensors checkpoints into f32, shared by the decoder and the encoder.

use crate::error::{Error, Result};
use crate::quant::{WeightFormat, dequantize};

/// One tensor read from a safetensors file, converted to f32.
pub struct DenseTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every tensor of a safetensors file (`bytes`) as f32, except those `skip` names (buffers that
/// are recomputed, such as rotary `inv_freq` or BERT's `position_ids`). `label` names the file in
/// errors. F32, F16 and BF16 are read; any other dtype is an error naming the tensor.
pub fn read_dense(bytes: &[u8], label: &str, skip: impl Fn(&str) -> bool) -> Result<Vec<DenseTensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: label.to_string(),
        message: format!("{e} (corrupt or truncated file?)"),
    })?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if skip(&name) {
            continue;
        }
        let shape = view.shape().to_vec();
        let n: usize = shape.iter().product();
        let format = match view.dtype() {
            safetensors::Dtype::F32 => WeightFormat::F32,
            safetensors::Dtype::F16 => WeightFormat::F16,
            safetensors::Dtype::BF16 => WeightFormat::BF16,
            other => {
                return Err(Error::Safetensors {
                    path: label.to_string(),
                    message: format!("tensor {name:?} has dtype {other:?} (F32, F16 and BF16 are supported)"),
                });
            }
        };
        let mut data = vec![0.0; n];
        dequantize(format, view.data(), &mut data);
        out.push(DenseTensor { name, shape, data });
    }
    Ok(out)
}
