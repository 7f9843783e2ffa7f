//! The safetensors format: reading checkpoints into f32 (or their stored f16/bf16 bytes), shared
//! by the decoder and the encoder, and writing files tensor after tensor ([`write_safetensors`]),
//! which the exports (adapter, merged model) and the trainer's checkpoints use.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::files;
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

// ---------------------------------------------------------------------------------------------
// Writing

/// Element type of exported model weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportDtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl ExportDtype {
    fn safetensors_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "F32",
            ExportDtype::Bf16 => "BF16",
            ExportDtype::F16 => "F16",
        }
    }

    /// The `torch_dtype` config.json records.
    pub fn torch_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "float32",
            ExportDtype::Bf16 => "bfloat16",
            ExportDtype::F16 => "float16",
        }
    }

    fn bytes(self) -> usize {
        match self {
            ExportDtype::F32 => 4,
            ExportDtype::Bf16 | ExportDtype::F16 => 2,
        }
    }

    /// Appends `values` in this type (round to nearest even, as torch's `.to()` does). A
    /// finite value that f16 cannot hold is an error naming the tensor, not a silent inf.
    fn encode(self, name: &str, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
        out.reserve(values.len() * self.bytes());
        match self {
            ExportDtype::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ExportDtype::Bf16 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())),
            ExportDtype::F16 => {
                for &v in values {
                    let h = half::f16::from_f32(v);
                    if v.is_finite() && !h.is_finite() {
                        return Err(Error::Invalid(format!(
                            "tensor {name:?} holds {v}, beyond float16's range; export as bf16 or f32"
                        )));
                    }
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for ExportDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(ExportDtype::F32),
            "bf16" | "bfloat16" => Ok(ExportDtype::Bf16),
            "f16" | "float16" => Ok(ExportDtype::F16),
            other => Err(Error::Invalid(format!(
                "unknown export dtype {other:?} (expected f32, bf16 or f16)"
            ))),
        }
    }
}

/// A tensor to be written: its values are produced only when its turn comes, so a model is
/// never held twice in memory.
pub(crate) struct Planned<'a> {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) values: Box<dyn Fn() -> Result<Vec<f32>> + 'a>,
}

/// Writes `tensors` as one safetensors file in `dtype` (with `format: pt` metadata, which
/// transformers checks), streaming tensor after tensor.
pub(crate) fn write_safetensors(path: &Path, tensors: &[Planned<'_>], dtype: ExportDtype) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for t in tensors {
        let n: usize = t.shape.iter().product();
        let end = offset + n * dtype.bytes();
        header.insert(
            t.name.clone(),
            json!({"dtype": dtype.safetensors_name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::Invalid(format!("{e}")))?;
    // The data that follows starts 8-byte aligned (the format pads the header with spaces).
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    files::write_atomic_with(path, |w| {
        let io = |e: std::io::Error| Error::io(path, e);
        w.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&header).map_err(io)?;
        let mut buf = Vec::new();
        for t in tensors {
            let values = (t.values)()?;
            let n: usize = t.shape.iter().product();
            if values.len() != n {
                return Err(Error::Invalid(format!(
                    "tensor {:?} has {} values for shape {:?}",
                    t.name,
                    values.len(),
                    t.shape
                )));
            }
            buf.clear();
            dtype.encode(&t.name, &values, &mut buf)?;
            w.write_all(&buf).map_err(io)?;
        }
        Ok(())
    })
}

/// Writes host tensors `(name, shape, values)` as one f32 safetensors file (checkpoints).
pub(crate) fn write_host_safetensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<()> {
    let planned: Vec<Planned<'_>> = tensors
        .into_iter()
        .map(|(name, shape, values)| Planned {
            name,
            shape,
            values: Box::new(move || Ok(values.clone())),
        })
        .collect();
    write_safetensors(path, &planned, ExportDtype::F32)
}
