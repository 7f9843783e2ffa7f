//! GGUF block formats against gguf-py on real blocks: rows that llama.cpp's own quantizer wrote
//! (`llama_model_quantize` of the default SmolLM2 and of a tiny 256-wide model: Q2_K, Q3_K,
//! Q4_K, Q5_K, Q6_K and the fallback types of the same files, Q4_0, Q5_0, Q5_1, Q8_0), and the
//! values `gguf.quants.dequantize` gives for them (`tests/golden/kquants/`, made by
//! `tests/golden/generate_kquants.sh`; provenance in its `kquants.json`).
//!
//! Tolerance: none. Both sides widen the f16 scales and compute in f32 in the same order, so
//! every value must be equal bit for bit, through `dequantize` on the stored bytes and through a
//! `QuantMatrix` (the form a loaded model keeps).

use sealong::loading::gguf::GgmlType;
use sealong::quant::{QuantMatrix, WeightFormat, dequantize};

fn format_of(name: &str) -> WeightFormat {
    let t = match name {
        "Q4_0" => GgmlType::Q4_0,
        "Q5_0" => GgmlType::Q5_0,
        "Q5_1" => GgmlType::Q5_1,
        "Q8_0" => GgmlType::Q8_0,
        "Q2_K" => GgmlType::Q2K,
        "Q3_K" => GgmlType::Q3K,
        "Q4_K" => GgmlType::Q4K,
        "Q5_K" => GgmlType::Q5K,
        "Q6_K" => GgmlType::Q6K,
        other => panic!("golden type {other} has no case here"),
    };
    WeightFormat::from_ggml(t, name).expect("supported")
}

#[test]
fn every_gguf_type_dequantizes_as_gguf_py_does_on_blocks_llama_cpp_wrote() {
    let dir = sealong_tests::golden_dir().join("kquants");
    let manifest = sealong_tests::golden_json("kquants/kquants.json");
    let bytes = std::fs::read(dir.join("kquants.safetensors")).expect("kquants.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let cases = manifest["cases"].as_array().expect("cases");
    let mut types: Vec<&str> = Vec::new();
    for case in cases {
        let key = sealong_tests::s(case, "key");
        let ty = sealong_tests::s(case, "type");
        let (rows, cols) = (
            case["rows"].as_u64().unwrap() as usize,
            case["cols"].as_u64().unwrap() as usize,
        );
        let format = format_of(ty);
        let raw = st.tensor(&format!("{key}.bytes")).expect("bytes").data().to_vec();
        let want: Vec<f32> = st
            .tensor(&format!("{key}.values"))
            .expect("values")
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(raw.len(), rows * format.row_bytes(cols), "{key}: byte count");
        assert_eq!(want.len(), rows * cols, "{key}: value count");
        let mut got = vec![f32::NAN; rows * cols];
        dequantize(format, &raw, &mut got);
        let m = QuantMatrix::from_gguf_bytes(format, rows, cols, &raw).expect("repack");
        let packed = m.to_f32();
        for (i, ((g, p), w)) in got.iter().zip(&packed).zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{key} ({}): value {i}: {g} vs gguf-py {w}",
                case["tensor"]
            );
            assert_eq!(
                p.to_bits(),
                w.to_bits(),
                "{key}: QuantMatrix value {i}: {p} vs gguf-py {w}"
            );
        }
        types.push(ty);
    }
    for ty in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q5_0", "Q5_1", "Q8_0"] {
        assert!(types.contains(&ty), "no golden case of {ty}");
    }
}

/// Q8_K (ggml's activation type; gguf-py has no dequantizer for it): ggml's
/// `dequantize_row_q8_K`, `y = d · q` with an f32 `d`, on a hand-built super-block.
#[test]
fn q8_k_dequantizes_as_ggml_does() {
    let format = WeightFormat::from_ggml(GgmlType::Q8K, "t").expect("supported");
    let d = 0.037_5f32;
    let mut block = d.to_le_bytes().to_vec();
    block.extend((0..256).map(|j| (j * 37 % 255 - 127) as i8 as u8));
    block.extend([0u8; 32]); // bsums: not read by the dequantizer
    assert_eq!(block.len(), format.row_bytes(256));
    let mut got = vec![0.0f32; 256];
    dequantize(format, &block, &mut got);
    for (j, g) in got.iter().enumerate() {
        let q = ((j * 37 % 255) as i32 - 127) as f32;
        assert_eq!(*g, d * q, "value {j}");
    }
}

/// Rows that are not whole blocks, and byte counts that disagree with the shape, are errors.
#[test]
fn raw_block_matrices_refuse_partial_rows_and_wrong_sizes() {
    for (ty, per) in [
        (GgmlType::Q4K, 256usize),
        (GgmlType::Q6K, 256),
        (GgmlType::Q5_0, 32),
        (GgmlType::Q5_1, 32),
    ] {
        let format = WeightFormat::from_ggml(ty, "t").expect("supported");
        let bytes = vec![0u8; 2 * format.row_bytes(2 * per)];
        let m = QuantMatrix::from_gguf_bytes(format, 2, 2 * per, &bytes).expect("whole blocks");
        assert_eq!(m.to_f32(), vec![0.0; 4 * per]);
        let e = QuantMatrix::from_gguf_bytes(format, 2, per + per / 2, &bytes).expect_err("half a block");
        assert!(e.to_string().contains(&format!("multiple of {per}")), "{e}");
        let e = QuantMatrix::from_gguf_bytes(format, 2, 2 * per, &bytes[1..]).expect_err("short");
        assert!(e.to_string().contains("needs"), "{e}");
    }
}
