//! GGUF container parsing: header, metadata key/values and tensor directory, with every count,
//! length and offset checked against the bytes that are really there (a corrupt or hostile file
//! gives an error naming what is wrong, never a panic or a huge allocation).
//!
//! Format (GGUF v2/v3, little-endian): magic `GGUF`, version u32, tensor count u64, metadata
//! count u64, metadata `(key: string, type: u32, value)`*, tensor infos `(name: string,
//! n_dims: u32, ne: u64[n_dims], ggml_type: u32, offset: u64)`*, padding to `general.alignment`
//! (default 32), then the tensor data. Strings are `u64 length + UTF-8 bytes`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::quant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Dimensions a ggml tensor can have.
const MAX_DIMS: u32 = 4;
/// Arrays nest at most this deep; real files use one level.
const MAX_ARRAY_DEPTH: usize = 4;
/// Items reserved up front for an array or the tensor directory; longer ones grow as their items
/// parse. A count is bounded by the bytes left in the file, but a parsed value is ~32 bytes in
/// memory against 1 in the file, so reserving a hostile count would ask for 32 times the file.
const RESERVE_CAP: usize = 4096;
/// Metadata array values in all (a 256k vocabulary with its scores, types and merges is about
/// 1.3M); at ~32 bytes each, this bounds what metadata arrays can take to 512 MiB.
const MAX_ARRAY_VALUES: usize = 1 << 24;

/// A metadata value. Arrays keep their element type so that an empty array is still typed.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description for error messages and `sealong models` output (arrays by length).
    pub fn summary(&self) -> String {
        match self {
            GgufValue::String(s) if s.len() > 80 => {
                format!("{:?}... ({} bytes)", &s[..s.floor_char_boundary(80)], s.len())
            }
            GgufValue::String(s) => format!("{s:?}"),
            GgufValue::Array(a) => format!("<array of {}>", a.len()),
            other => format!("{other:?}"),
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml `ne`: the innermost (contiguous) dimension first. A 2-D weight `[rows, cols]` in
    /// row-major terms has `ne = [cols, rows]`.
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset of the data from the start of the file (already resolved).
    pub data_offset: u64,
    /// Bytes the data occupies.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Row-major shape, outermost first (`ne` reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF header: metadata and tensor directory. Tensor bytes stay in the caller's buffer.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Offset of the tensor data section.
    pub data_start: u64,
}

/// Cursor over the file bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a str,
    /// Metadata array values parsed so far, and the most allowed.
    array_values: usize,
    max_array_values: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Gguf {
            path: self.path.to_string(),
            message: message.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} bytes",
                self.pos,
                self.bytes.len()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must be backed by at least `min_item_bytes` bytes per item in the file, so a
    /// hostile count cannot make us allocate more than the file's size.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let max = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(self.err(format!(
                "{what} is {n}, but only {} bytes remain after offset {} (corrupt or truncated file)",
                self.remaining(),
                self.pos
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(&format!("length of {what}"), 1)?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(format!("{what} at offset {at} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => {
                let b = self.array::<1>(key)?[0];
                if b > 1 {
                    return Err(self.err(format!("metadata {key:?}: bool byte is {b}")));
                }
                GgufValue::Bool(b == 1)
            }
            8 => GgufValue::String(self.string(&format!("metadata {key:?}"))?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("metadata {key:?}: arrays nested too deep")));
                }
                let elem_ty = self.u32(key)?;
                let min = min_value_bytes(elem_ty)
                    .ok_or_else(|| self.err(format!("metadata {key:?}: unknown array element type {elem_ty}")))?;
                let n = self.count(&format!("metadata {key:?} array length"), min)?;
                self.array_values = self.array_values.saturating_add(n);
                if self.array_values > self.max_array_values {
                    return Err(self.err(format!(
                        "metadata {key:?}: an array of {n} values brings the metadata arrays to {} values, more \
                         than the {} this loader accepts",
                        self.array_values, self.max_array_values
                    )));
                }
                let mut items = Vec::with_capacity(n.min(RESERVE_CAP));
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.err(format!("metadata {key:?}: unknown value type {other}"))),
        })
    }
}

/// Smallest encoding of a value of this type (used to bound array lengths).
fn min_value_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

impl Gguf {
    /// Parses the header of a GGUF file held in `bytes`. `path` only labels errors.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Gguf> {
        Self::parse_limited(bytes, path, MAX_ARRAY_VALUES)
    }

    /// [`Gguf::parse`] with at most `max_array_values` metadata array values in all.
    fn parse_limited(bytes: &[u8], path: &str, max_array_values: usize) -> Result<Gguf> {
        let mut r = Reader {
            bytes,
            pos: 0,
            path,
            array_values: 0,
            max_array_values,
        };
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            return Err(r.err(format!(
                "not a GGUF file (magic {:?}, expected \"GGUF\")",
                String::from_utf8_lossy(magic)
            )));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(r.err(format!("GGUF version {version} is not supported (2 and 3 are)")));
        }
        // A tensor info is at least 8 (name len) + 4 + 4 + 8 bytes; a key/value at least 8 + 4 + 1.
        let n_tensors_raw = r.u64("tensor count")?;
        let n_kv = r.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&key)?;
            let value = r.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.err(format!("metadata key {key:?} appears twice")));
            }
        }
        if n_tensors_raw > (r.remaining() / 24) as u64 {
            return Err(r.err(format!(
                "tensor count is {n_tensors_raw}, more than the {} remaining bytes can describe",
                r.remaining()
            )));
        }
        let n_tensors = n_tensors_raw as usize;
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(r.err(format!("general.alignment {} is not a power of two", v.summary()))),
            },
        };
        let mut raw = Vec::with_capacity(n_tensors.min(RESERVE_CAP));
        for i in 0..n_tensors {
            let name = r.string(&format!("tensor #{i} name"))?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.err(format!("tensor {name:?} has {n_dims} dimensions (1..=4 allowed)")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(r.u64(&name)?);
            }
            let ggml_type = GgmlType::from_id(r.u32(&name)?);
            let offset = r.u64(&name)?;
            raw.push((name, ne, ggml_type, offset));
        }
        let header_end = r.pos as u64;
        let data_start = header_end.div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut seen = std::collections::HashSet::new();
        for (name, ne, ggml_type, offset) in raw {
            let err = |m: String| Error::Gguf {
                path: path.to_string(),
                message: format!("tensor {name:?}: {m}"),
            };
            if !seen.insert(name.clone()) {
                return Err(err("name appears twice".into()));
            }
            let n_elements = ne
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| err(format!("shape {ne:?} overflows")))?;
            let (block_elems, block_bytes) = ggml_type.block().ok_or_else(|| {
                err(format!(
                    "unsupported {} (supported: {})",
                    ggml_type.name(),
                    crate::quant::SUPPORTED_TYPES
                ))
            })?;
            if ne[0] % block_elems != 0 {
                return Err(err(format!(
                    "innermost dimension {} is not a multiple of the {} block size {block_elems}",
                    ne[0],
                    ggml_type.name()
                )));
            }
            let n_bytes = (n_elements / block_elems)
                .checked_mul(block_bytes)
                .ok_or_else(|| err("size overflows".into()))?;
            if offset % alignment != 0 {
                return Err(err(format!("offset {offset} is not aligned to {alignment}")));
            }
            let data_offset = data_start
                .checked_add(offset)
                .ok_or_else(|| err("offset overflows".into()))?;
            let end = data_offset
                .checked_add(n_bytes)
                .ok_or_else(|| err("offset overflows".into()))?;
            if end > file_len {
                return Err(err(format!(
                    "data [{data_offset}, {end}) runs past the end of the file ({file_len} bytes): truncated file?"
                )));
            }
            tensors.push(GgufTensorInfo {
                name,
                ne,
                ggml_type,
                data_offset,
                n_bytes,
            });
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            data_start,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// `general.architecture` (e.g. "llama", "qwen2").
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor inside the buffer this header was parsed from.
    pub fn tensor_bytes<'b>(&self, bytes: &'b [u8], info: &GgufTensorInfo) -> &'b [u8] {
        // Bounds were checked against the same buffer's length in `parse`.
        &bytes[info.data_offset as usize..(info.data_offset + info.n_bytes) as usize]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a small GGUF file in memory (used by tests here and by the tokenizer tests).
    #[derive(Default)]
    pub struct GgufBuilder {
        kv: Vec<(String, u32, Vec<u8>)>,
        tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    fn enc_str(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    impl GgufBuilder {
        pub fn string(mut self, k: &str, v: &str) -> Self {
            self.kv.push((k.into(), 8, enc_str(v)));
            self
        }
        pub fn u32(mut self, k: &str, v: u32) -> Self {
            self.kv.push((k.into(), 4, v.to_le_bytes().to_vec()));
            self
        }
        pub fn bool(mut self, k: &str, v: bool) -> Self {
            self.kv.push((k.into(), 7, vec![v as u8]));
            self
        }
        pub fn strings(mut self, k: &str, v: &[&str]) -> Self {
            let mut b = 8u32.to_le_bytes().to_vec();
            b.extend((v.len() as u64).to_le_bytes());
            for s in v {
                b.extend(enc_str(s));
            }
            self.kv.push((k.into(), 9, b));
            self
        }
        pub fn i32s(mut self, k: &str, v: &[i32]) -> Self {
            let mut b = 5u32.to_le_bytes().to_vec();
            b.extend((v.len() as u64).to_le_bytes());
            for x in v {
                b.extend(x.to_le_bytes());
            }
            self.kv.push((k.into(), 9, b));
            self
        }
        pub fn tensor_f32(mut self, name: &str, ne: &[u64], data: &[f32]) -> Self {
            let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.tensors.push((name.into(), ne.to_vec(), 0, bytes));
            self
        }
        pub fn build(self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend((self.kv.len() as u64).to_le_bytes());
            for (k, ty, v) in &self.kv {
                out.extend(enc_str(k));
                out.extend(ty.to_le_bytes());
                out.extend(v);
            }
            let mut offset = 0u64;
            let mut offsets = vec![];
            for (name, ne, ty, data) in &self.tensors {
                out.extend(enc_str(name));
                out.extend((ne.len() as u32).to_le_bytes());
                for d in ne {
                    out.extend(d.to_le_bytes());
                }
                out.extend(ty.to_le_bytes());
                out.extend(offset.to_le_bytes());
                offsets.push(offset);
                offset += (data.len() as u64).div_ceil(32) * 32;
            }
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            for (_, _, _, data) in &self.tensors {
                out.extend(data);
                while !out.len().is_multiple_of(32) {
                    out.push(0);
                }
            }
            out
        }
    }

    #[test]
    fn parses_a_built_file() {
        let bytes = GgufBuilder::default()
            .string("general.architecture", "llama")
            .u32("llama.block_count", 2)
            .strings("tokenizer.ggml.tokens", &["a", "b"])
            .tensor_f32("w", &[2, 3], &[0., 1., 2., 3., 4., 5.])
            .build();
        let g = Gguf::parse(&bytes, "mem").expect("parse");
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get("llama.block_count").and_then(GgufValue::as_u64), Some(2));
        let t = g.tensor("w").expect("tensor");
        assert_eq!(t.shape(), vec![3, 2]);
        let data = g.tensor_bytes(&bytes, t);
        assert_eq!(f32::from_le_bytes(data[20..24].try_into().expect("4")), 5.0);
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        let bytes = GgufBuilder::default()
            .string("general.architecture", "llama")
            .tensor_f32("w", &[4], &[1., 2., 3., 4.])
            .build();
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(
            Gguf::parse(&bad, "m")
                .unwrap_err()
                .to_string()
                .contains("not a GGUF file")
        );
        // The last 16 bytes are alignment padding after the 16 data bytes.
        for cut in [3, 10, 30, bytes.len() - 17] {
            let e = Gguf::parse(&bytes[..cut], "m").unwrap_err().to_string();
            assert!(
                e.contains("truncated") || e.contains("past the end") || e.contains("remain"),
                "{e}"
            );
        }
    }

    #[test]
    fn huge_counts_are_rejected_before_allocation() {
        let mut bytes = GgufBuilder::default().string("k", "v").build();
        // metadata count lives at offset 16
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = Gguf::parse(&bytes, "m").unwrap_err().to_string();
        assert!(e.contains("metadata count"), "{e}");
    }

    /// Issue 17: an array's count was checked against the bytes left, but each value takes ~32
    /// bytes in memory; the count is bounded by the element type's size, the reservation is
    /// capped, and all arrays together have a budget.
    #[test]
    fn array_lengths_are_bounded_by_their_element_size_and_a_budget() {
        fn u8_array(key: &str, n: u64, present: usize) -> Vec<u8> {
            let mut b = 0u32.to_le_bytes().to_vec();
            b.extend(n.to_le_bytes());
            b.extend(std::iter::repeat_n(7u8, present));
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(0u64.to_le_bytes());
            out.extend(1u64.to_le_bytes());
            out.extend(enc_str(key));
            out.extend(9u32.to_le_bytes());
            out.extend(b);
            out
        }
        // 100 bytes of items: 100 u8 values parse, 101 are more than the file holds.
        let g = Gguf::parse(&u8_array("k", 100, 100), "m").expect("100 u8 values");
        assert_eq!(
            g.get("k").and_then(GgufValue::as_array).map(<[GgufValue]>::len),
            Some(100)
        );
        let e = Gguf::parse(&u8_array("k", 101, 100), "m").unwrap_err().to_string();
        assert!(
            e.contains("metadata \"k\" array length is 101, but only 100 bytes remain"),
            "{e}"
        );
        // u32 items need 4 bytes each: 100 bytes hold 25, not 26.
        let mut u32s = u8_array("k", 26, 100);
        u32s[4 + 4 + 16 + 8 + 1 + 4..][..4].copy_from_slice(&4u32.to_le_bytes());
        let e = Gguf::parse(&u32s, "m").unwrap_err().to_string();
        assert!(e.contains("array length is 26, but only 100 bytes remain"), "{e}");
        // A count the file can back but the budget cannot: an error naming the key, before
        // the values are parsed.
        let e = Gguf::parse_limited(&u8_array("tokenizer.x", 100, 100), "m", 99)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("metadata \"tokenizer.x\": an array of 100 values") && e.contains("more than the 99"),
            "{e}"
        );
        // The budget counts every array: two of 60 pass 120, fail 119.
        let two = GgufBuilder::default().i32s("a", &[1; 60]).i32s("b", &[2; 60]).build();
        assert!(Gguf::parse_limited(&two, "m", 120).is_ok());
        let e = Gguf::parse_limited(&two, "m", 119).unwrap_err().to_string();
        assert!(e.contains("metadata \"b\"") && e.contains("to 120 values"), "{e}");
    }

    fn sample_file() -> Vec<u8> {
        GgufBuilder::default()
            .string("general.architecture", "llama")
            .u32("llama.block_count", 2)
            .bool("tokenizer.ggml.add_bos_token", false)
            .strings("tokenizer.ggml.tokens", &["<s>", "a", "b", "ab"])
            .i32s("tokenizer.ggml.token_type", &[3, 1, 1, 1])
            .tensor_f32("blk.0.w", &[4, 2], &[0.5; 8])
            .tensor_f32("norm", &[4], &[1.0; 4])
            .build()
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        /// Random byte edits anywhere in a valid file: an error or a header, never a panic.
        #[test]
        fn mutated_files_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = sample_file();
            for (i, b) in edits {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            let _ = Gguf::parse(&bytes, "fuzz");
        }

        /// Every count, length, dimension and offset field set to a hostile value: an error
        /// (checked before any allocation of that size), never a panic.
        #[test]
        fn hostile_u64_fields_are_rejected_or_parsed(pos in 0usize..200, value in prop_oneof![
            Just(u64::MAX), Just(u64::MAX / 2), Just(1u64 << 40), Just(1u64 << 32), 0u64..1_000_000
        ]) {
            let mut bytes = sample_file();
            let pos = pos.min(bytes.len() - 8);
            bytes[pos..pos + 8].copy_from_slice(&value.to_le_bytes());
            let _ = Gguf::parse(&bytes, "fuzz");
        }

        /// Every prefix of a valid file is an error that says what is missing.
        #[test]
        fn truncated_files_are_errors(cut in 0usize..300) {
            let bytes = sample_file();
            let cut = cut.min(bytes.len() - 1);
            // The data of the last tensor ends 16 bytes before the end of the padded file.
            if cut < bytes.len() - 16 {
                prop_assert!(Gguf::parse(&bytes[..cut], "fuzz").is_err());
            }
        }
    }
}
