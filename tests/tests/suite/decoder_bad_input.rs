//! Bad model files and requests get errors that name the file, tensor or limit; never a panic
//! or a huge allocation. Includes a property test that mutates the real GGUF's header (counts,
//! offsets, shapes, string lengths) and a safetensors header.

use std::path::Path;

use proptest::prelude::*;
use sealong::loading::ModelPath;
use sealong::loading::gguf::Gguf;
use sealong::models::decoder::Engine;
use sealong::models::decoder::weights::DecoderWeights;
use sealong::nn::linear::Precision;
use sealong_tests::{sealong, smollm_path, tiny};

fn load_err(path: &Path) -> String {
    let kind = match ModelPath::detect(path) {
        Ok(k) => k,
        Err(e) => return e.to_string(),
    };
    match Engine::load(&kind, &burn::tensor::Device::flex(), Precision::Exact) {
        Ok(_) => panic!("{} should not load", path.display()),
        Err(e) => e.to_string(),
    }
}

/// The first bytes of the real GGUF (header, all metadata and the tensor directory) and the
/// offset where the tensor directory starts; read once.
fn real_header() -> &'static (Vec<u8>, usize) {
    static HEADER: std::sync::OnceLock<(Vec<u8>, usize)> = std::sync::OnceLock::new();
    HEADER.get_or_init(|| {
        let bytes = std::fs::read(smollm_path()).expect("gguf")[..2_000_000].to_vec();
        let name = b"token_embd.weight";
        let at = bytes
            .windows(name.len())
            .position(|w| w == name)
            .expect("tensor directory")
            - 8;
        (bytes, at)
    })
}

#[test]
fn truncated_and_corrupt_gguf() {
    let dir = tempfile::tempdir().expect("tmp");
    let full = std::fs::read(smollm_path()).expect("gguf");
    // Cut in the tensor data: the directory parses, the last tensors point past the end.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &full[..full.len() / 2]).expect("w");
    let e = load_err(&cut);
    assert!(e.contains("cut.gguf") && e.contains("past the end"), "{e}");
    // Cut in the metadata.
    std::fs::write(&cut, &full[..1000]).expect("w");
    let e = load_err(&cut);
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    // Wrong magic.
    let bad = dir.path().join("bad.gguf");
    let mut b = full[..4096].to_vec();
    b[..4].copy_from_slice(b"GGML");
    std::fs::write(&bad, &b).expect("w");
    let e = load_err(&bad);
    assert!(e.contains("not a GGUF file"), "{e}");
}

/// Rewrites one tensor's ggml type id in a GGUF header (the u32 before its offset).
fn set_tensor_type(bytes: &mut [u8], name: &str, type_id: u32) {
    let g = Gguf::parse(bytes, "x").expect("parse");
    assert!(g.tensor(name).is_some());
    let needle = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("name in header")
        + needle.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
    let ty_at = at + 4 + 8 * n_dims;
    bytes[ty_at..ty_at + 4].copy_from_slice(&type_id.to_le_bytes());
}

#[test]
fn unsupported_quant_type_and_architecture_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let real = std::fs::read(smollm_path()).expect("gguf");
    // IQ2_XXS (16): a type we do not dequantize; the error lists those we do.
    let mut bytes = real.clone();
    set_tensor_type(&mut bytes, "blk.3.ffn_up.weight", 16);
    let p = dir.path().join("iq2.gguf");
    std::fs::write(&p, &bytes).expect("w");
    let e = load_err(&p);
    assert!(e.contains("blk.3.ffn_up.weight") && e.contains("Q6_K"), "{e}");
    // Q4_K (12) on a 576-wide tensor: rows are not whole 256-weight super-blocks (and the bytes
    // do not match the shape); an error naming the tensor.
    let mut bytes = real.clone();
    set_tensor_type(&mut bytes, "blk.3.ffn_up.weight", 12);
    let p = dir.path().join("q4k.gguf");
    std::fs::write(&p, &bytes).expect("w");
    let e = load_err(&p);
    assert!(e.contains("blk.3.ffn_up.weight"), "{e}");
    // An architecture we do not run.
    let spec = tiny::TinySpec {
        model_type: "gpt_neox",
        ..tiny_spec()
    };
    let w = tiny::random_weights(&tiny_spec(), 1);
    let d = dir.path().join("neox");
    tiny::write_hf_dir(&d, &spec, &w);
    let e = load_err(&d);
    assert!(e.contains("gpt_neox") && e.contains("not supported"), "{e}");
}

fn tiny_spec() -> tiny::TinySpec {
    tiny::TinySpec {
        layers: 1,
        heads: 2,
        kv_heads: 1,
        head_dim: 16,
        max_positions: 32,
        ..tiny::TinySpec::small()
    }
}

#[test]
fn corrupt_safetensors_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = tiny_spec();
    tiny::write_hf_dir(dir.path(), &spec, &tiny::random_weights(&spec, 2));
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).expect("read");
    std::fs::write(&st, &bytes[..bytes.len() - 100]).expect("w");
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn oversize_context_is_an_error_unless_truncating() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = dir.path().join("q.jsonl");
    // ~9k tokens of context: more than SmolLM2's 8192 with 64 new tokens.
    let context = "The quick brown fox jumps over the lazy dog. ".repeat(900);
    let rec = serde_json::json!({"_id": "long", "input": "What jumps?", "context": context, "answers": ["fox"]});
    std::fs::write(&q, format!("{rec}\n")).expect("w");
    let out = dir.path().join("p.jsonl");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "--input",
            q.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let a = args(&[]);
    let e = sealong(&a.iter().map(String::as_str).collect::<Vec<_>>()).expect_err("too long");
    let msg = format!("{e:#}");
    assert!(msg.contains("q.jsonl:1") && msg.contains("--truncate-middle"), "{msg}");
    let a = args(&["--truncate-middle"]);
    sealong(&a.iter().map(String::as_str).collect::<Vec<_>>()).expect("truncated run");
    let rec: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&out).expect("out").trim()).expect("json");
    assert!(rec["truncated_tokens"].as_u64().expect("n") > 0, "{rec}");
    assert!(rec["prompt_tokens"].as_u64().expect("n") <= 8192 - 4);
}

#[test]
fn wrong_model_path_is_explained() {
    let e = format!(
        "{:#}",
        sealong(&["generate", "--model", "/nope/model.gguf", "--prompt", "hi"]).expect_err("no model")
    );
    assert!(e.contains("/nope/model.gguf"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Byte edits anywhere in the real header: an error or a parse, never a panic.
    #[test]
    fn mutated_real_gguf_header_never_panics(edits in proptest::collection::vec((0usize..2_000_000, any::<u8>()), 1..6)) {
        let mut bytes = real_header().0.clone();
        for (i, b) in edits { bytes[i] = b; }
        let _ = Gguf::parse(&bytes, "fuzz");
    }

    /// Hostile 64-bit values in the length/count/offset/dimension fields near the start of the
    /// header and of the tensor directory: rejected before any allocation of that size.
    #[test]
    fn hostile_u64_fields_in_real_gguf(pos in 0usize..40_000, value in prop_oneof![
        Just(u64::MAX), Just(1u64 << 40), Just(1u64 << 33), Just(u64::from(u32::MAX)), 0u64..100_000
    ]) {
        let (header, dir_start) = real_header();
        let mut bytes = header.clone();
        // Half the cases in the file header and first keys, half in the tensor directory.
        let pos = if pos < 20_000 { 8 + pos % 400 } else { dir_start + (pos - 20_000) };
        bytes[pos..pos + 8].copy_from_slice(&value.to_le_bytes());
        let _ = Gguf::parse(&bytes, "fuzz");
    }

    /// Arbitrary bytes, row counts and widths in the formats kept as raw blocks (Q5_0, Q5_1 and
    /// the K-quants): a matrix or an error, never a panic, and a matrix dequantizes.
    #[test]
    fn raw_block_matrices_from_arbitrary_bytes_never_panic(
        ty in 0usize..8, rows in 0usize..4, cols in 0usize..600, delta in 0usize..5, seed in any::<u64>()
    ) {
        use sealong::quant::GgmlType;
        use sealong::quant::{QuantMatrix, WeightFormat};
        let types = [GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K,
                     GgmlType::Q5K, GgmlType::Q6K, GgmlType::Q8K];
        let format = WeightFormat::from_ggml(types[ty], "fuzz").expect("supported");
        // Exactly the bytes the shape needs, or up to 2 fewer or more.
        let len = (rows * format.row_bytes(cols) + delta).saturating_sub(2);
        let mut x = seed;
        let bytes: Vec<u8> = (0..len).map(|_| { x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (x >> 56) as u8 }).collect();
        if let Ok(m) = QuantMatrix::from_gguf_bytes(format, rows, cols, &bytes) {
            prop_assert_eq!(m.to_f32().len(), rows * cols);
        }
    }

    /// A safetensors file with a mutated header: the loader errors, never panics.
    #[test]
    fn mutated_safetensors_header_never_panics(edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..6)) {
        let spec = tiny_spec();
        let dir = tempfile::tempdir().expect("tmp");
        tiny::write_hf_dir(dir.path(), &spec, &tiny::random_weights(&spec, 3));
        let st = dir.path().join("model.safetensors");
        let mut bytes = std::fs::read(&st).expect("read");
        for (i, b) in edits { let i = i.min(bytes.len() - 1); bytes[i] = b; }
        std::fs::write(&st, &bytes).expect("w");
        if let Ok(path) = ModelPath::detect(dir.path()) {
            let _ = DecoderWeights::load(&path);
        }
    }
}
