//! GGUF block formats against gguf-py on real blocks: rows that llama.cpp's own quantizer wrote
//! (`llama_model_quantize` of the default SmolLM2 and of a tiny 256-wide model: Q2_K, Q3_K,
//! Q4_K, Q5_K, Q6_K and the fallback types of the same files, Q4_0, Q5_0, Q5_1, Q8_0), and the
//! values `gguf.quants.dequantize` gives for them (`tests/golden/kquants/`, made by
//! `tests/golden/generate_kquants.sh`; provenance in its `kquants.json`).
//!
//! Tolerance: none. Both sides widen the f16 scales and compute in f32 in the same order, so
//! every value must be equal bit for bit, through `dequantize` on the stored bytes and through a
//! `QuantMatrix` (the form a loaded model keeps).

use sealong::quant::GgmlType;
use sealong::quant::{QuantMatrix, WeightFormat, dequantize};

pub(crate) fn format_of(name: &str) -> WeightFormat {
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
        let want = sealong_tests::tensor_f32(&st, &format!("{key}.values")).1;
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

/// The directory of llama.cpp's requantized SmolLM2 files for the logits test
/// (`SEALONG_KQUANT_DIR`, else `~/.cache/sealong/kquants`). Missing files are made there once,
/// with llama.cpp's quantizer from the llama-cpp-python venv the remote-backend tests use
/// (`generate_kquants.py quantize`, seconds a file), and every file must be the one the goldens
/// were made from (its sha256 in `kquant_logits.json`).
fn kquant_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("SEALONG_KQUANT_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/sealong/kquants")
            });
        let record = sealong_tests::golden_json("kquants/kquant_logits.json");
        let files = record["files"].as_object().expect("files");
        let missing: Vec<String> = files
            .keys()
            .filter(|f| !dir.join(f).exists())
            .map(|f| f.trim_end_matches(".gguf").to_string())
            .collect();
        if !missing.is_empty() {
            let status = std::process::Command::new(sealong_tests::llama_cpp_python())
                .arg(sealong_tests::golden_dir().join("generate_kquants.py"))
                .arg("quantize")
                .arg(sealong_tests::smollm_path())
                .arg(&dir)
                .args(&missing)
                .status()
                .expect("run generate_kquants.py quantize");
            assert!(
                status.success(),
                "llama.cpp's quantizer failed making {missing:?} in {}",
                dir.display()
            );
        }
        for (f, v) in files {
            use sha2::{Digest, Sha256};
            let bytes = std::fs::read(dir.join(f)).expect("read the quantized file");
            let got: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                got,
                sealong_tests::s(v, "sha256"),
                "{}: not the file the goldens were made from (this machine's llama.cpp wrote other blocks); \
                 regenerate the goldens with tests/golden/generate_kquants.sh",
                dir.join(f).display()
            );
        }
        dir
    })
}

/// SmolLM2 requantized by llama.cpp to Q4_K_M and Q3_K_M (between them Q3_K, Q4_K, Q5_K, Q6_K,
/// Q5_0, Q5_1 and Q8_0 tensors) against transformers loading the same files: logits at the last
/// prompt position within 1e-3 (max |d|, as the Q4_1 parity test), for the CPU engine and the
/// burn decoder; 48 greedy tokens identical, where a divergence is excused only at a step whose
/// reference top-2 margin is below 1e-3 (a near-tie that f32 summation order can flip). And the
/// int8 precision's decode step (the K-quant rows' super-block kernels) within decoder_parity's
/// int8 bound (2.5; measured 0.84-1.40).
#[test]
fn k_quant_models_match_transformers_logits_and_greedy_tokens() {
    use burn::prelude::Device;
    use sealong::generate::{self, GenerateOptions, SamplingParams};
    use sealong::loading::ModelPath;
    use sealong::models::decoder::weights::DecoderWeights;
    use sealong::models::decoder::{CpuDecoder, Decoder};
    use sealong::nn::linear::Precision;
    use sealong::rng;

    const LOGIT_TOL: f32 = 1e-3;
    let dir = kquant_dir();
    let chat = sealong_tests::golden_json("smollm_chat.json");
    let record = sealong_tests::golden_json("kquants/kquant_logits.json");
    let bytes = std::fs::read(sealong_tests::golden_dir().join("kquants/kquant_logits.safetensors")).expect("golden");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let n_new = record["greedy_new_tokens"].as_u64().expect("n") as usize;
    for (file, v) in record["files"].as_object().expect("files") {
        let path = ModelPath::detect(&dir.join(file)).expect("detect");
        let (config, mut w) = DecoderWeights::load(&path).expect("weights");
        let mut cpu = CpuDecoder::from_weights(config, &mut w).expect("cpu engine");
        w.finish().expect("every weight used");
        let burn = Decoder::load(&path, &Device::flex()).expect("burn decoder");
        let name = file.trim_end_matches(".gguf");
        for case in v["cases"].as_array().expect("cases") {
            let k = case["prompt"].as_u64().expect("prompt") as usize;
            let prompt = sealong_tests::ids(&chat["prompts"][k], "ids");
            let want = sealong_tests::tensor_f32(&st, &format!("{name}.{k}.logits_final")).1;
            let last = [prompt.len() - 1];
            let got = crate::decoder_parity::cpu_logits_at(&cpu, &prompt, &last);
            let d = sealong_tests::max_abs_diff(&got[0], &want);
            assert!(d <= LOGIT_TOL, "{file} prompt {k}: CPU engine max |d| = {d}");
            eprintln!("{file} prompt {k}: CPU engine max |d| = {d:.2e}");
            let got = crate::decoder_parity::logits_at(&burn, &prompt, &last);
            let d = sealong_tests::max_abs_diff(&got[0], &want);
            assert!(d <= LOGIT_TOL, "{file} prompt {k}: burn decoder max |d| = {d}");

            // The int8 precision (llama.cpp's arithmetic) with the last token decoded alone, so
            // the K-quant rows run their decode kernels (activations rounded per super-block of
            // 256): within decoder_parity's int8 bound of transformers.
            cpu.precision = Precision::Int8;
            let mut cache = cpu.new_cache(1);
            for chunk in prompt[..prompt.len() - 1].chunks(generate::PREFILL_CHUNK) {
                cpu.forward_hidden(&[chunk.to_vec()], &mut cache).expect("prefill");
            }
            let hidden = cpu
                .forward_hidden(&[vec![prompt[prompt.len() - 1]]], &mut cache)
                .expect("decode");
            let d = sealong_tests::max_abs_diff(&cpu.logits(&hidden, 1), &want);
            eprintln!("{file} prompt {k}: CPU engine int8, last token decoded: max |d| = {d:.2e}");
            assert!(
                d <= crate::decoder_parity::INT8_LOGIT_TOL,
                "{file} prompt {k}: CPU engine int8 max |d| = {d}"
            );
            cpu.precision = Precision::Exact;

            let opts = GenerateOptions {
                sampling: SamplingParams::greedy(),
                max_new_tokens: n_new,
                stop_ids: vec![],
            };
            let mut rngs = vec![rng::for_item(0, "greedy")];
            let out = generate::generate(&cpu, &prompt, &opts, &mut rngs, |_| {}).expect("generate");
            let want_ids = sealong_tests::ids(case, "greedy_ids");
            if let Some(i) = out[0].ids.iter().zip(&want_ids).position(|(a, b)| a != b) {
                let margin = case["margins"][i].as_f64().expect("margin");
                assert!(
                    margin < 1e-3,
                    "{file} prompt {k}: greedy token {i} is {} where transformers has {} (top-2 margin {margin})",
                    out[0].ids[i],
                    want_ids[i]
                );
            } else {
                assert_eq!(out[0].ids.len(), want_ids.len(), "{file} prompt {k}: greedy length");
            }
        }
    }
}

/// The same files on a cubecl (wgpu) device (lavapipe in CI), where the weights now stay in
/// their blocks (`sealong_shaders::stored`): the burn decoder's logits at the last prompt
/// position within 1e-3 of transformers, as on the CPU.
#[test]
fn k_quant_models_on_wgpu_match_transformers_logits() {
    use sealong::loading::ModelPath;
    use sealong::models::decoder::Decoder;
    use sealong::nn::linear::LinearWeight;

    const LOGIT_TOL: f32 = 1e-3;
    let dir = kquant_dir();
    let device = sealong_tests::wgpu_device();
    let chat = sealong_tests::golden_json("smollm_chat.json");
    let record = sealong_tests::golden_json("kquants/kquant_logits.json");
    let bytes = std::fs::read(sealong_tests::golden_dir().join("kquants/kquant_logits.safetensors")).expect("golden");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    for (file, v) in record["files"].as_object().expect("files") {
        let path = ModelPath::detect(&dir.join(file)).expect("detect");
        let model = Decoder::load(&path, &device).expect("decoder on wgpu");
        assert!(
            matches!(model.layers[0].down_proj.weight, LinearWeight::Quant(_)),
            "{file}: the weights should stay stored on the device"
        );
        let name = file.trim_end_matches(".gguf");
        for case in v["cases"].as_array().expect("cases") {
            let k = case["prompt"].as_u64().expect("prompt") as usize;
            let prompt = sealong_tests::ids(&chat["prompts"][k], "ids");
            let want = sealong_tests::tensor_f32(&st, &format!("{name}.{k}.logits_final")).1;
            let got = crate::decoder_parity::logits_at(&model, &prompt, &[prompt.len() - 1]);
            let d = sealong_tests::max_abs_diff(&got[0], &want);
            eprintln!("{file} prompt {k}: wgpu decoder max |d| = {d:.2e}");
            assert!(d <= LOGIT_TOL, "{file} prompt {k}: wgpu decoder max |d| = {d}");
        }
    }
}
