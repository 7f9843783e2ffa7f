//! Reading safetensors checkpoints into f32, shared by the decoder and the encoder.

use crate::error::{Error, Result};
use crate::quant::{WeightFormat, dequantize};

/// One tensor read from a safetensors file, converted to f32.
pub struct DenseTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One tensor's values: widened to f32, or its stored bytes where the caller keeps them.
pub enum TensorValues<'a> {
    F32(Vec<f32>),
    /// The little-endian bytes as stored, in `format` (f16 or bf16): a slice of the file's
    /// bytes, which the caller copies (and may then release, see `FileBytes::release`).
    Stored(WeightFormat, &'a [u8]),
}

/// One tensor read from a safetensors file, as f32 or as stored.
pub struct LoadedTensor<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: TensorValues<'a>,
}

/// Every tensor of a safetensors file (`bytes`) as f32, except those `skip` names (buffers that
/// are recomputed, such as rotary `inv_freq` or BERT's `position_ids`). `label` names the file in
/// errors. F32, F16 and BF16 are read; any other dtype is an error naming the tensor.
pub fn read_dense(bytes: &[u8], label: &str, skip: impl Fn(&str) -> bool) -> Result<Vec<DenseTensor>> {
    Ok(read_tensors(bytes, label, skip, |_, _, _| false)?
        .into_iter()
        .map(|t| DenseTensor {
            name: t.name,
            shape: t.shape,
            data: match t.values {
                TensorValues::F32(v) => v,
                TensorValues::Stored(..) => unreachable!("read_dense keeps nothing stored"),
            },
        })
        .collect())
}

/// The format of a safetensors dtype this crate reads (F32, F16, BF16), else `None`.
pub fn format_of(dtype: safetensors::Dtype) -> Option<WeightFormat> {
    match dtype {
        safetensors::Dtype::F32 => Some(WeightFormat::F32),
        safetensors::Dtype::F16 => Some(WeightFormat::F16),
        safetensors::Dtype::BF16 => Some(WeightFormat::BF16),
        _ => None,
    }
}

/// [`read_dense`], except that a half-precision tensor for which `keep(name, shape, format)`
/// holds keeps its stored bytes (no f32 copy is made of it).
pub fn read_tensors<'a>(
    bytes: &'a [u8],
    label: &str,
    skip: impl Fn(&str) -> bool,
    keep: impl Fn(&str, &[usize], WeightFormat) -> bool,
) -> Result<Vec<LoadedTensor<'a>>> {
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
        let Some(format) = format_of(view.dtype()) else {
            return Err(Error::Safetensors {
                path: label.to_string(),
                message: format!(
                    "tensor {name:?} has dtype {:?} (F32, F16 and BF16 are supported)",
                    view.dtype()
                ),
            });
        };
        let values = if format.is_half() && keep(&name, &shape, format) {
            TensorValues::Stored(format, view.data())
        } else {
            let mut data = vec![0.0; n];
            dequantize(format, view.data(), &mut data);
            TensorValues::F32(data)
        };
        out.push(LoadedTensor { name, shape, values });
    }
    Ok(out)
}
