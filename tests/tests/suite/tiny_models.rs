//! Tiny random decoders cover what the default model does not: HF safetensors loading, q/k/v
//! biases (Qwen2), untied output heads, Llama-3 RoPE scaling (as config.json parameters and as
//! GGUF `rope_freqs.weight` divisors), and GGUF's Q/K row permutation. Both engines are
//! checked against a naive f64 forward written from the HF formulas (tolerance 1e-4 absolute on
//! logits of magnitude ~1-10, f32 arithmetic), and the GGUF copy against the HF copy.

use burn::prelude::*;
use sealong::loading::ModelPath;
use sealong::models::decoder::weights::DecoderWeights;
use sealong::models::decoder::{CpuDecoder, Decoder};
use sealong::nn::KvCache;
use sealong_tests::tiny::{self, TinySpec};

const TOL: f64 = 1e-4;

fn llama_spec() -> TinySpec {
    TinySpec::llama()
}

fn qwen_spec() -> TinySpec {
    TinySpec::qwen2()
}

fn prompt() -> Vec<u32> {
    (0..23).map(|i| (i * 37 + 5) % 96).collect()
}

fn cpu_all_logits(path: &ModelPath, ids: &[u32]) -> Vec<Vec<f32>> {
    let (config, mut w) = DecoderWeights::load(path).expect("weights");
    let m = CpuDecoder::from_weights(config, &mut w).expect("cpu engine");
    w.finish().expect("all weights used");
    let mut cache = m.new_cache(1);
    // Two forwards, so the second attends over a cache it did not write in the same call.
    let (a, b) = ids.split_at(9);
    let mut rows = Vec::new();
    for part in [a, b] {
        let hidden = m.forward_hidden(&[part.to_vec()], &mut cache).expect("forward");
        let logits = m.logits(&hidden, part.len());
        rows.extend(logits.chunks_exact(m.config.vocab_size).map(<[f32]>::to_vec));
    }
    rows
}

fn burn_all_logits(path: &ModelPath, ids: &[u32]) -> Vec<Vec<f32>> {
    let m = Decoder::load(path, &Device::flex()).expect("burn decoder");
    let mut cache: KvCache = m.new_cache(1);
    let (a, b) = ids.split_at(9);
    let mut rows = Vec::new();
    for part in [a, b] {
        let logits = m.forward_all(&[part.to_vec()], &mut cache).expect("forward");
        let v: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().expect("read");
        rows.extend(v.chunks_exact(m.config.vocab_size).map(<[f32]>::to_vec));
    }
    rows
}

fn max_diff(got: &[Vec<f32>], reference: &[Vec<f64>]) -> f64 {
    got.iter()
        .zip(reference)
        .flat_map(|(g, r)| g.iter().zip(r).map(|(a, b)| (f64::from(*a) - b).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn llama_with_llama3_scaling_and_untied_head_hf_and_gguf() {
    let spec = llama_spec();
    let weights = tiny::random_weights(&spec, 11);
    let dir = tempfile::tempdir().expect("tmp");
    let hf = dir.path().join("hf");
    tiny::write_hf_dir(&hf, &spec, &weights);
    let gguf = dir.path().join("tiny.gguf");
    tiny::write_gguf(&gguf, &spec, &weights);
    let ids = prompt();
    let reference = tiny::reference_logits(&spec, &weights, &ids);
    let hf_path = ModelPath::detect(&hf).expect("hf dir");
    let gguf_path = ModelPath::detect(&gguf).expect("gguf");
    assert!(matches!(gguf_path, ModelPath::Gguf(_)) && matches!(hf_path, ModelPath::HfDir(_)));
    for (name, got) in [
        ("cpu/hf", cpu_all_logits(&hf_path, &ids)),
        ("burn/hf", burn_all_logits(&hf_path, &ids)),
        ("cpu/gguf", cpu_all_logits(&gguf_path, &ids)),
        ("burn/gguf", burn_all_logits(&gguf_path, &ids)),
    ] {
        let d = max_diff(&got, &reference);
        assert!(d <= TOL, "{name}: max |logit - reference| = {d}");
    }
}

#[test]
fn qwen2_with_qkv_bias_and_tied_head() {
    let spec = qwen_spec();
    let weights = tiny::random_weights(&spec, 5);
    let dir = tempfile::tempdir().expect("tmp");
    tiny::write_hf_dir(dir.path(), &spec, &weights);
    let ids = prompt();
    let reference = tiny::reference_logits(&spec, &weights, &ids);
    let path = ModelPath::detect(dir.path()).expect("hf dir");
    for (name, got) in [
        ("cpu", cpu_all_logits(&path, &ids)),
        ("burn", burn_all_logits(&path, &ids)),
    ] {
        let d = max_diff(&got, &reference);
        assert!(d <= TOL, "{name}: max |logit - reference| = {d}");
    }
}

/// Issue 17: `max_position_embeddings` (a header field) sized `[max, head_dim]` RoPE tables at
/// load, so 2^40 asked for 64 TiB. The CPU engine now computes the rows each forward needs and
/// the burn decoder's tables stop at `nn::rope::MAX_TABLE_VALUES`; both still match the
/// reference.
#[test]
fn a_huge_context_length_allocates_nothing_of_its_size() {
    let mut spec = qwen_spec();
    spec.max_positions = 1 << 40;
    let weights = tiny::random_weights(&spec, 5);
    let dir = tempfile::tempdir().expect("tmp");
    tiny::write_hf_dir(dir.path(), &spec, &weights);
    let ids = prompt();
    let reference = tiny::reference_logits(&spec, &weights, &ids);
    let path = ModelPath::detect(dir.path()).expect("hf dir");
    for (name, got) in [
        ("cpu", cpu_all_logits(&path, &ids)),
        ("burn", burn_all_logits(&path, &ids)),
    ] {
        let d = max_diff(&got, &reference);
        assert!(d <= TOL, "{name}: max |logit - reference| = {d}");
    }
    let m = Decoder::load(&path, &Device::flex()).expect("burn decoder");
    assert_eq!(m.config.max_position_embeddings, 1 << 40);
    assert_eq!(
        m.rope.max_positions,
        sealong::nn::rope::MAX_TABLE_VALUES / spec.head_dim,
        "the tables stop at the limit"
    );
    // The last tabled position is served; the first past the tables is an error naming the
    // limit and the engine without one, not a slice out of range.
    let last = m.rope.max_positions - 1;
    m.check_input(&[vec![1]], last).expect("the last tabled position");
    let e = m
        .check_input(&[vec![1]], last + 1)
        .expect_err("past the tables")
        .to_string();
    assert!(
        e.contains(&format!("{} positions exceed the {} positions", last + 2, last + 1))
            && e.contains("MAX_TABLE_VALUES")
            && e.contains("--device cpu"),
        "{e}"
    );
}

/// A layer count no file backs: refused when no model could have it (2^50 sized a vector of
/// per-layer flags, and reserved room for that many layers, before anything checked it), and
/// otherwise an error naming the first missing layer tensor.
#[test]
fn a_huge_layer_count_is_an_error_naming_the_count_or_the_missing_tensor() {
    let spec = qwen_spec();
    let weights = tiny::random_weights(&spec, 5);
    let dir = tempfile::tempdir().expect("tmp");
    tiny::write_hf_dir(dir.path(), &spec, &weights);
    let path = ModelPath::detect(dir.path()).expect("hf dir");
    let mut config = tiny::hf_config(&spec);
    config["num_hidden_layers"] = serde_json::json!(1u64 << 50);
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
    for e in [
        DecoderWeights::load(&path)
            .map(|_| ())
            .expect_err("cpu engine")
            .to_string(),
        Decoder::load(&path, &Device::flex())
            .map(|_| ())
            .expect_err("burn decoder")
            .to_string(),
    ] {
        assert!(
            e.contains("config.json") && e.contains("\"num_hidden_layers\" is 1125899906842624, more than the 4096"),
            "{e}"
        );
    }
    config["num_hidden_layers"] = serde_json::json!(4096);
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
    let (config, mut w) = DecoderWeights::load(&path).expect("weights");
    let e = CpuDecoder::from_weights(config, &mut w)
        .map(|_| ())
        .expect_err("cpu engine")
        .to_string();
    assert!(e.contains("model.layers.2."), "{e}");
    let e = Decoder::load(&path, &Device::flex())
        .map(|_| ())
        .expect_err("burn decoder")
        .to_string();
    assert!(e.contains("model.layers.2."), "{e}");
}

#[test]
fn a_missing_or_extra_or_misshaped_tensor_is_named() {
    let spec = llama_spec();
    let dir = tempfile::tempdir().expect("tmp");
    let load = |w: &tiny::Weights| {
        let d = dir.path().join(format!("m{}", w.len()));
        tiny::write_hf_dir(&d, &spec, w);
        let path = ModelPath::detect(&d).expect("dir");
        let (config, mut weights) = DecoderWeights::load(&path).expect("weights");
        let r = CpuDecoder::from_weights(config, &mut weights).and_then(|_| weights.finish());
        r.expect_err("must fail").to_string()
    };
    let mut w = tiny::random_weights(&spec, 1);
    w.remove("model.layers.1.mlp.up_proj.weight");
    let e = load(&w);
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"),
        "{e}"
    );
    let mut w = tiny::random_weights(&spec, 1);
    w.insert("model.layers.0.extra.weight".into(), (vec![2], vec![0.0, 1.0]));
    let e = load(&w);
    assert!(
        e.contains("model.layers.0.extra.weight") && e.contains("not used"),
        "{e}"
    );
    let mut w = tiny::random_weights(&spec, 1);
    w.insert("model.norm.weight".into(), (vec![47], vec![1.0; 47]));
    let e = load(&w);
    assert!(e.contains("model.norm.weight") && e.contains("[47]"), "{e}");
}

/// f16 and bf16 safetensors: every matrix whose rows are whole 32-value blocks stays 16-bit in
/// memory (a `QuantMatrix` of that format, widened a row block at a time), and both engines
/// compute what the f64 reference computes from the rounded values (the same tolerance).
#[test]
fn half_precision_safetensors_stay_half_and_match_the_reference() {
    use sealong::loading::weight::WeightData;
    use sealong::quant::WeightFormat;
    let spec = TinySpec::qwen2().in_whole_blocks();
    let weights = tiny::random_weights(&spec, 12);
    let ids = prompt();
    for (dtype, format) in [
        (safetensors::Dtype::BF16, WeightFormat::BF16),
        (safetensors::Dtype::F16, WeightFormat::F16),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        tiny::write_hf_dir_as(dir.path(), &spec, &weights, dtype);
        let path = ModelPath::detect(dir.path()).expect("hf dir");
        let (_, w) = DecoderWeights::load(&path).expect("weights");
        for name in ["model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight"] {
            let t = w.get(name).expect(name);
            assert!(
                matches!(&t.data, WeightData::Quant(q) if q.format == format),
                "{dtype:?}: {t:?}"
            );
        }
        let reference = tiny::reference_logits(&spec, &tiny::rounded(&weights, dtype), &ids);
        for (name, got) in [
            ("cpu", cpu_all_logits(&path, &ids)),
            ("burn", burn_all_logits(&path, &ids)),
        ] {
            let d = max_diff(&got, &reference);
            assert!(d < TOL, "{dtype:?} {name}: logits differ from the reference by {d}");
        }
    }
}

/// What a decoder's loaded weights hold, in bytes (the oracle of `models inspect`'s figure).
fn held_bytes(w: &DecoderWeights, names: &[String]) -> u64 {
    use sealong::loading::weight::WeightData;
    names
        .iter()
        .filter_map(|n| w.get(n))
        .map(|t| match &t.data {
            WeightData::Quant(q) => (q.scales.len() * 4 + q.qs.len()) as u64,
            WeightData::Dense(v) => (v.len() * 4) as u64,
        })
        .sum()
}

/// `models inspect` on the default GGUF and on a bf16 HF directory: the shapes and types the
/// files hold, the template's source, and bytes in memory equal to what the loader holds.
#[test]
fn models_inspect_reports_types_shapes_and_the_memory_the_loader_holds() {
    use sealong::models::inspect::inspect;
    let gguf = sealong_tests::smollm_path();
    let path = ModelPath::detect(&gguf).expect("gguf");
    let r = inspect(&path).expect("inspect");
    assert_eq!(
        (r.container, r.config.num_hidden_layers, r.config.hidden_size),
        ("gguf", 30, 576)
    );
    assert_eq!(r.config.max_position_embeddings, 8192);
    let count = |ty: &str| r.types.get(ty).map_or(0, |s| s.tensors);
    assert_eq!(
        (count("Q4_1"), count("Q8_0"), count("F32")),
        (210, 1, 61),
        "{:?}",
        r.types
    );
    assert_eq!(r.tensors.len(), 272);
    assert_eq!(
        r.chat_template.as_deref(),
        Some("GGUF metadata tokenizer.chat_template")
    );
    assert_eq!(r.stored_bytes, r.tensors.iter().map(|t| t.stored_bytes).sum::<u64>());
    // The loader renames tensors to HF names; compare the totals.
    let (_, w) = DecoderWeights::load(&path).expect("weights");
    let names: Vec<String> = w_names(&w);
    assert_eq!(r.loaded_bytes, held_bytes(&w, &names), "GGUF: bytes in memory");
    sealong_tests::sealong(&["models", "inspect", gguf.to_str().expect("utf8"), "--json"]).expect("cli");

    let spec = TinySpec::qwen2().in_whole_blocks();
    let dir = tempfile::tempdir().expect("tmp");
    tiny::write_hf_dir_as(
        dir.path(),
        &spec,
        &tiny::random_weights(&spec, 5),
        safetensors::Dtype::BF16,
    );
    let path = ModelPath::detect(dir.path()).expect("hf dir");
    let r = inspect(&path).expect("inspect");
    assert_eq!((r.container, r.config.family.model_type()), ("hf-dir", "qwen2"));
    assert_eq!(r.types.keys().collect::<Vec<_>>(), ["BF16"]);
    assert_eq!(r.chat_template, None, "weights alone: no tokenizer, no template");
    let (_, w) = DecoderWeights::load(&path).expect("weights");
    let names: Vec<String> = w_names(&w);
    assert_eq!(r.loaded_bytes, held_bytes(&w, &names), "bf16 HF: bytes in memory");
    // The 2-D matrices stay bf16: well under the f32 size.
    assert!(
        r.loaded_bytes < r.parameters * 3,
        "{} bytes for {} parameters",
        r.loaded_bytes,
        r.parameters
    );
}

fn w_names(w: &DecoderWeights) -> Vec<String> {
    w.names().map(str::to_string).collect()
}
