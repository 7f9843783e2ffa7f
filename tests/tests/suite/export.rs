//! Export: PEFT LoRA adapters (save, load, apply to the burn decoder, merge into loaded
//! weights for the CPU engine, `sealong generate --adapter`) and merged HF model directories
//! (config.json round trip, weights in HF order for GGUF bases, tokenizer files), on tiny
//! random models (HF and GGUF bases, q/k/v biases, tied and untied heads, Llama-3 RoPE
//! scaling) and on SmolLM2.
//!
//! Tolerances: the merged weights `W + s B A` and the adapted forward `W x + s B (A x)` round
//! differently in f32, so logits agree to ~1e-6 on the tiny models (asserted: 1e-4, absolute,
//! logits of magnitude ~1-10).
//!
//! With `SEALONG_EXPORT_CHECK_DIR` set, the SmolLM2 test leaves its merged directory, adapter
//! and logits there for `bench/peers/check_export.py` (transformers / peft on the same files).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use sealong::generate::{self, GenerateOptions, SamplingParams};
use sealong::loading::{ModelPath, TextAssets};
use sealong::models::decoder::adapter::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, engine_with_adapter};
use sealong::models::decoder::config::{DecoderConfig, Llama3RopeScaling, RopeScaling};
use sealong::models::decoder::weights::DecoderWeights;
use sealong::models::decoder::{Decoder, Engine, LanguageModel};
use sealong::nn::Linear;
use sealong::nn::linear::Precision;
use sealong::text::{ChatTemplate, Tokenizer};
use sealong::train::{
    ExportDtype, LoraConfig, LoraTarget, apply_lora, load_peft_adapter, save_merged, save_peft_adapter,
};
use sealong_tests::tiny::{self, TinySpec};
use sealong_tests::{SplitMix, golden_json, ids, s, sealong, smollm_path};
use serde_json::{Value, json};

const TOL: f32 = 1e-4;

fn llama_spec() -> TinySpec {
    TinySpec::llama()
}

fn qwen_spec(tied: bool) -> TinySpec {
    TinySpec {
        tied,
        ..TinySpec::qwen2()
    }
}

fn prompt() -> Vec<u32> {
    (0..23).map(|i| (i * 37 + 5) % 96).collect()
}

/// A word-level tokenizer over the tiny vocabulary (`<pad>`, `<s>`, `</s>`, `<unk>`, `w4`...).
fn tiny_tokenizer_json(vocab: usize) -> Value {
    let specials = ["<pad>", "<s>", "</s>", "<unk>"];
    let mut words = serde_json::Map::new();
    for (i, s) in specials.iter().enumerate() {
        words.insert((*s).to_string(), json!(i));
    }
    for i in specials.len()..vocab {
        words.insert(format!("w{i}"), json!(i));
    }
    let added: Vec<Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"},
    })
}

const TINY_TEMPLATE: &str = "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}\
                             {% if add_generation_prompt %}<s>assistant{% endif %}";

fn tiny_assets(vocab: usize, add_bos: bool) -> TextAssets {
    let bytes = serde_json::to_vec(&tiny_tokenizer_json(vocab)).expect("json");
    let mut tokenizer = Tokenizer::from_json_bytes(&bytes, "tiny").expect("tokenizer");
    tokenizer.set_special_tokens(Some("<s>".into()), Some("</s>".into()), Some("<pad>".into()));
    tokenizer.add_bos = add_bos;
    TextAssets {
        tokenizer,
        chat_template: Some(ChatTemplate::new(TINY_TEMPLATE, "<s>", "</s>").expect("template")),
        template_source: Some("the tiny test template".into()),
        source: "tiny".into(),
    }
}

/// Writes the tiny tokenizer files into an HF directory (so the CLI can load it).
fn write_tiny_tokenizer(dir: &Path, vocab: usize) {
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&tiny_tokenizer_json(vocab)).expect("json"),
    )
    .expect("write");
    let config = json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "chat_template": TINY_TEMPLATE});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write");
}

/// A tiny base model written as an HF directory or a GGUF file under `root`.
fn write_base(root: &Path, spec: &TinySpec, gguf: bool, seed: u64) -> ModelPath {
    let weights = tiny::random_weights(spec, seed);
    let path = if gguf {
        let p = root.join("base.gguf");
        tiny::write_gguf(&p, spec, &weights);
        p
    } else {
        let p = root.join("base");
        tiny::write_hf_dir(&p, spec, &weights);
        write_tiny_tokenizer(&p, spec.vocab);
        p
    };
    ModelPath::detect(&path).expect("detect base")
}

fn projections(layer: &mut sealong::models::decoder::model::DecoderLayer) -> [&mut Linear; 7] {
    [
        &mut layer.q_proj,
        &mut layer.k_proj,
        &mut layer.v_proj,
        &mut layer.o_proj,
        &mut layer.gate_proj,
        &mut layer.up_proj,
        &mut layer.down_proj,
    ]
}

/// Replaces every adapter's B (zero after `apply_lora`) with uniform values in `±scale`, so
/// the adapters change the model.
fn randomize_b(decoder: &mut Decoder, seed: u64, scale: f32) {
    let device = decoder.device.clone();
    let mut rng = SplitMix(seed);
    for layer in &mut decoder.layers {
        for lin in projections(layer) {
            if let Some(ad) = lin.lora.as_mut() {
                let [out, r] = ad.b.dims();
                ad.b = Tensor::from_data(TensorData::new(rng.vec(out * r, scale), [out, r]), &device);
            }
        }
    }
}

fn lora_config(dropout: f64) -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout,
        targets: LoraTarget::ALL.to_vec(),
    }
}

/// The base on the CPU backend with random adapters on all seven projections.
fn adapted(base: &ModelPath, config: &LoraConfig) -> Decoder {
    let mut dec = Decoder::load(base, &Device::flex()).expect("load base");
    apply_lora(&mut dec, config, 7).expect("apply_lora");
    randomize_b(&mut dec, 3, 1.0);
    dec
}

/// Logits at every position of one sequence through the burn decoder.
fn burn_logits(dec: &Decoder, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = dec.new_cache(1);
    let logits = dec.forward_all(&[ids.to_vec()], &mut cache).expect("forward");
    let v: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().expect("read");
    v.chunks_exact(dec.config.vocab_size).map(<[f32]>::to_vec).collect()
}

/// Logits at every position through an engine, which must be the CPU engine.
fn cpu_logits(engine: &Engine, ids: &[u32]) -> Vec<Vec<f32>> {
    let Engine::Cpu(m) = engine else {
        panic!("expected the CPU engine on the CPU backend, got {}", engine.name())
    };
    let mut cache = m.new_cache(1);
    let hidden = m.forward_hidden(&[ids.to_vec()], &mut cache).expect("forward");
    m.logits(&hidden, ids.len())
        .chunks_exact(m.config.vocab_size)
        .map(<[f32]>::to_vec)
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks two configs describe the same model; RoPE scaling by the frequencies it gives (a
/// GGUF's divisors come back as the `llama3` parameters that reproduce them).
fn assert_same_model_config(got: &DecoderConfig, want: &DecoderConfig) {
    let freqs = |c: &DecoderConfig| c.rope_inv_freq();
    for (a, b) in freqs(got).iter().zip(freqs(want)) {
        assert!((a - b).abs() <= 1e-6 * b.abs(), "rope inv_freq {a} vs {b}");
    }
    let strip = |c: &DecoderConfig| DecoderConfig {
        rope_scaling: RopeScaling::None,
        ..c.clone()
    };
    assert_eq!(strip(got), strip(want));
}

#[test]
fn merged_export_equals_the_adapted_model() {
    let ids = prompt();
    for (label, spec, gguf) in [
        ("llama untied llama3-rope, HF base", llama_spec(), false),
        ("llama untied llama3-rope, GGUF base", llama_spec(), true),
        ("qwen2 q/k/v bias, tied", qwen_spec(true), false),
        ("qwen2 q/k/v bias, untied", qwen_spec(false), false),
    ] {
        let root = tempfile::tempdir().expect("tmp");
        let base = write_base(root.path(), &spec, gguf, 11);
        let base_logits = burn_logits(&Decoder::load(&base, &Device::flex()).expect("base"), &ids);
        let dec = adapted(&base, &lora_config(0.0));
        let want = burn_logits(&dec, &ids);
        let moved = max_diff(&want, &base_logits);
        assert!(moved > 0.05, "{label}: the adapter barely changes the logits ({moved})");

        let assets = tiny_assets(spec.vocab, false);
        let out = root.path().join("merged");
        save_merged(&dec, &assets, &out, ExportDtype::F32).expect("save_merged");
        let merged = ModelPath::detect(&out).expect("merged dir");
        assert!(matches!(merged, ModelPath::HfDir(_)));
        // A tied head is not written; an untied one is.
        let st_bytes = std::fs::read(out.join("model.safetensors")).expect("read");
        let st = safetensors::SafeTensors::deserialize(&st_bytes).expect("safetensors");
        assert_eq!(st.names().contains(&"lm_head.weight"), !spec.tied, "{label}");

        let engine = Engine::load(&merged, &Device::flex(), Precision::Exact).expect("cpu engine on export");
        let d_cpu = max_diff(&cpu_logits(&engine, &ids), &want);
        assert!(
            d_cpu <= TOL,
            "{label}: CPU engine on the export vs adapted burn: {d_cpu}"
        );
        let reloaded = Decoder::load(&merged, &Device::flex()).expect("burn on export");
        let d_burn = max_diff(&burn_logits(&reloaded, &ids), &want);
        assert!(
            d_burn <= TOL,
            "{label}: burn decoder on the export vs adapted burn: {d_burn}"
        );
        eprintln!("{label}: adapter moves logits by {moved:.3}; export vs adapted: cpu {d_cpu:.2e}, burn {d_burn:.2e}");

        let cfg = DecoderConfig::from_hf_dir(&out).expect("config");
        assert_same_model_config(&cfg, &dec.config);
        let hf = read_json(&out.join("config.json"));
        let arch = if spec.qkv_bias {
            "Qwen2ForCausalLM"
        } else {
            "LlamaForCausalLM"
        };
        assert_eq!(hf["architectures"], json!([arch]), "{label}");
        assert_eq!(hf["torch_dtype"], "float32");
        if spec.llama3_scaling.is_some() {
            assert_eq!(hf["rope_scaling"]["rope_type"], "llama3", "{label}");
        }

        let text = TextAssets::from_hf_dir(&out).expect("text assets of the export");
        let sample = "<s>user w5 w17 nonsense w95</s>";
        assert_eq!(
            text.tokenizer.encode(sample, false).expect("encode"),
            assets.tokenizer.encode(sample, false).expect("encode")
        );
        assert_eq!(text.tokenizer.bos_id, Some(1));
        assert_eq!(text.tokenizer.eos_id, Some(2));
        assert_eq!(text.tokenizer.pad_id, Some(0));
        assert!(!text.tokenizer.add_bos);
        assert_eq!(text.template().expect("template").source(), TINY_TEMPLATE);
        assert_eq!(read_json(&out.join("generation_config.json"))["eos_token_id"], json!(2));
        assert_eq!(
            read_json(&out.join("special_tokens_map.json")),
            json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
        );
        // No temporary files are left behind.
        for e in std::fs::read_dir(&out).expect("ls") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "{label}: {name} left behind");
        }
    }
}

/// bf16 = the f32 value rounded to nearest even in its top 16 bits (torch's `.to(bfloat16)`).
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[test]
fn half_precision_exports_round_to_nearest_even_and_load() {
    let root = tempfile::tempdir().expect("tmp");
    let spec = qwen_spec(false);
    let base = write_base(root.path(), &spec, false, 2);
    let dec = adapted(&base, &lora_config(0.0));
    let assets = tiny_assets(spec.vocab, false);
    let f32_dir = root.path().join("f32");
    save_merged(&dec, &assets, &f32_dir, ExportDtype::F32).expect("f32 export");
    let f32_bytes = std::fs::read(f32_dir.join("model.safetensors")).expect("read");
    let f32_st = safetensors::SafeTensors::deserialize(&f32_bytes).expect("st");
    let want = burn_logits(&dec, &prompt());
    for (dtype, st_dtype, torch, tol) in [
        (ExportDtype::Bf16, safetensors::Dtype::BF16, "bfloat16", 0.5f32),
        (ExportDtype::F16, safetensors::Dtype::F16, "float16", 0.05),
    ] {
        let dir = root.path().join(torch);
        save_merged(&dec, &assets, &dir, dtype).expect("export");
        assert_eq!(read_json(&dir.join("config.json"))["torch_dtype"], torch);
        let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
        assert_eq!(st.names().len(), f32_st.names().len());
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), st_dtype, "{name}");
            let full = f32_st.tensor(&name).expect("same names");
            assert_eq!(view.shape(), full.shape(), "{name}");
            for (h, f) in view.data().chunks_exact(2).zip(full.data().chunks_exact(4)) {
                let x = f32::from_le_bytes([f[0], f[1], f[2], f[3]]);
                let got = u16::from_le_bytes([h[0], h[1]]);
                let expected = match dtype {
                    ExportDtype::Bf16 => bf16_bits(x),
                    _ => half::f16::from_f32(x).to_bits(),
                };
                assert_eq!(got, expected, "{name}: {x}");
            }
        }
        let engine = Engine::load(
            &ModelPath::detect(&dir).expect("dir"),
            &Device::flex(),
            Precision::Exact,
        )
        .expect("load half-precision export");
        let d = max_diff(&cpu_logits(&engine, &prompt()), &want);
        assert!(d <= tol, "{torch}: logits moved by {d}");
    }
}

#[test]
fn peft_adapter_round_trip() {
    let root = tempfile::tempdir().expect("tmp");
    let spec = llama_spec();
    let base = write_base(root.path(), &spec, true, 4);
    let config = lora_config(0.05);
    let mut dec = adapted(&base, &config);
    let dir = root.path().join("adapter");
    save_peft_adapter(&dec, &config, "tiny/base", &dir).expect("save adapter");

    let cfg = read_json(&dir.join(ADAPTER_CONFIG));
    assert_eq!(
        cfg,
        json!({
            "alpha_pattern": {}, "base_model_name_or_path": "tiny/base", "bias": "none",
            "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
            "layers_pattern": null, "layers_to_transform": null, "lora_alpha": 8, "lora_dropout": 0.05,
            "modules_to_save": null, "peft_type": "LORA", "r": 4, "rank_pattern": {}, "revision": null,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false,
        })
    );
    let bytes = std::fs::read(dir.join(ADAPTER_WEIGHTS)).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let (d, q, kv, i) = (
        spec.hidden,
        spec.heads * spec.head_dim,
        spec.kv_heads * spec.head_dim,
        spec.intermediate,
    );
    let mut expected = Vec::new();
    for l in 0..spec.layers {
        for (module, out, inp) in [
            ("self_attn.q_proj", q, d),
            ("self_attn.k_proj", kv, d),
            ("self_attn.v_proj", kv, d),
            ("self_attn.o_proj", d, q),
            ("mlp.gate_proj", i, d),
            ("mlp.up_proj", i, d),
            ("mlp.down_proj", d, i),
        ] {
            let p = format!("base_model.model.model.layers.{l}.{module}");
            expected.push((format!("{p}.lora_A.weight"), vec![4, inp]));
            expected.push((format!("{p}.lora_B.weight"), vec![out, 4]));
        }
    }
    expected.sort();
    let mut got: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{n}");
            (n, v.shape().to_vec())
        })
        .collect();
    got.sort();
    assert_eq!(got, expected);

    let adapter = load_peft_adapter(&dir).expect("load adapter");
    assert_eq!(adapter.config, config);
    assert_eq!(adapter.base_model_name.as_deref(), Some("tiny/base"));
    assert_eq!(adapter.modules.len(), spec.layers * 7);
    for (l, layer) in dec.layers.iter_mut().enumerate() {
        for (t, lin) in LoraTarget::ALL.into_iter().zip(projections(layer)) {
            let ad = lin.lora.as_ref().expect("adapter");
            let p = &adapter.modules[&format!("model.layers.{l}.{}.{}", t.parent(), t.name())];
            let a: Vec<f32> = ad.a.clone().into_data().try_into_vec_as().expect("a");
            let b: Vec<f32> = ad.b.clone().into_data().try_into_vec_as().expect("b");
            assert_eq!((p.a.clone(), p.b.clone()), (a, b), "layer {l} {}", t.name());
        }
    }

    // (a) onto a fresh burn decoder: the same model; on an autodiff device, trainable.
    let ids = prompt();
    let want = burn_logits(&dec, &ids);
    let mut fresh = Decoder::load(&base, &Device::flex()).expect("base");
    adapter.apply_to(&mut fresh).expect("apply");
    assert!(max_diff(&burn_logits(&fresh, &ids), &want) <= 1e-6);
    let mut train = Decoder::load(&base, &Device::flex().autodiff()).expect("base on autodiff");
    adapter.apply_to(&mut train).expect("apply on autodiff");
    let ad = train.layers[1].down_proj.lora.as_ref().expect("adapter");
    assert!(ad.a.is_require_grad() && ad.b.is_require_grad());
    assert_eq!(ad.dropout, 0.05);

    // (b) merged into the loaded weights: the CPU engine runs the adapted model.
    let (cfg, mut weights) = DecoderWeights::load(&base).expect("weights");
    adapter.merge_into(&cfg, &mut weights).expect("merge");
    let engine = Engine::from_weights(cfg, weights, &Device::flex(), Precision::Exact).expect("engine");
    let d = max_diff(&cpu_logits(&engine, &ids), &want);
    assert!(d <= TOL, "CPU engine with the merged adapter vs adapted burn: {d}");

    // (c) beside the CPU engine's weights, unmerged (what `generate|eval --adapter` load).
    let engine = engine_with_adapter(&base, &adapter, &Device::flex(), Precision::Exact).expect("engine");
    assert_eq!(engine.name(), "cpu-engine");
    let d = max_diff(&cpu_logits(&engine, &ids), &want);
    assert!(d <= TOL, "CPU engine with the adapter attached vs adapted burn: {d}");
}

/// Greedy continuation of `ids` (no stop ids).
fn greedy<M: LanguageModel>(m: &M, ids: &[u32], n: usize) -> Vec<u32> {
    let options = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_new_tokens: n,
        stop_ids: vec![],
    };
    let mut rngs = vec![sealong::rng::for_item(0, "greedy")];
    generate::generate(m, ids, &options, &mut rngs, |_| {}).expect("generate")[0]
        .ids
        .clone()
}

#[test]
fn generate_with_adapter_equals_generate_on_the_merged_dir() {
    let root = tempfile::tempdir().expect("tmp");
    let spec = qwen_spec(false);
    let base = write_base(root.path(), &spec, false, 9);
    let config = lora_config(0.0);
    let dec = adapted(&base, &config);
    let adapter = root.path().join("adapter");
    let merged = root.path().join("merged");
    save_peft_adapter(&dec, &config, "tiny", &adapter).expect("adapter");
    let assets = TextAssets::load(&base).expect("base text assets");
    save_merged(&dec, &assets, &merged, ExportDtype::F32).expect("merged");

    let run = |model: &Path, adapter: Option<&Path>, dump: &Path| {
        let mut args = vec![
            "generate".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--device".into(),
            "cpu".into(),
            "--prompt".into(),
            "w5 w6 w7 w40".into(),
            "--max-new-tokens".into(),
            "8".into(),
            "--dump-logits".into(),
            dump.display().to_string(),
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter".into(), a.display().to_string()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        sealong(&argv).expect("sealong generate");
        read_json(dump)
    };
    let with_adapter = run(base.path(), Some(&adapter), &root.path().join("a.json"));
    let on_merged = run(&merged, None, &root.path().join("m.json"));
    assert_eq!(with_adapter["engine"], "cpu-engine");
    assert_eq!(with_adapter["prompt_ids"], on_merged["prompt_ids"]);
    assert_eq!(with_adapter["generated_ids"], on_merged["generated_ids"]);
    let logits = |v: &Value| -> Vec<f32> {
        v["last_logits"]
            .as_array()
            .expect("logits")
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect()
    };
    let d = max_diff(&[logits(&with_adapter)], &[logits(&on_merged)]);
    assert!(d <= 1e-5, "generate --adapter vs the merged dir: {d}");
    // And both are the adapted burn model.
    let prompt_ids: Vec<u32> = ids(&with_adapter, "prompt_ids");
    let want = burn_logits(&dec, &prompt_ids);
    let d = max_diff(&[logits(&with_adapter)], &want[want.len() - 1..]);
    assert!(d <= TOL, "generate --adapter vs adapted burn: {d}");
    assert_eq!(ids(&with_adapter, "generated_ids"), greedy(&dec, &prompt_ids, 8));
}

#[test]
fn config_json_round_trip() {
    let mut with_eos_list = tiny::hf_config(&llama_spec());
    with_eos_list["eos_token_id"] = json!([2, 5]);
    let mut linear = tiny::hf_config(&qwen_spec(true));
    linear["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.5});
    for v in [
        tiny::hf_config(&llama_spec()),
        tiny::hf_config(&qwen_spec(true)),
        tiny::hf_config(&qwen_spec(false)),
        with_eos_list,
        linear,
    ] {
        let c = DecoderConfig::from_hf_json(&v, "config.json").expect("from_hf_json");
        let back = DecoderConfig::from_hf_json(&c.to_hf_json().expect("to_hf_json"), "round trip").expect("reparse");
        assert_eq!(back, c);
    }

    // A GGUF's Llama-3 divisors become llama3 parameters giving the same frequencies.
    let root = tempfile::tempdir().expect("tmp");
    let base = write_base(root.path(), &llama_spec(), true, 1);
    let (c, _) = DecoderWeights::load(&base).expect("gguf");
    assert!(matches!(c.rope_scaling, RopeScaling::Factors(_)));
    let back = DecoderConfig::from_hf_json(&c.to_hf_json().expect("to_hf_json"), "rt").expect("reparse");
    assert!(matches!(back.rope_scaling, RopeScaling::Llama3(_)));
    assert_same_model_config(&back, &c);

    // Llama 3.1's own parameters are recovered exactly from its divisors (as llama.cpp
    // writes them: f32 base / scaled frequency).
    let llama31 = DecoderConfig {
        family: sealong::models::decoder::Family::Llama,
        vocab_size: 128_256,
        hidden_size: 4096,
        intermediate_size: 14_336,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        head_dim: 128,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: RopeScaling::Llama3(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }),
        max_position_embeddings: 131_072,
        tie_word_embeddings: false,
        attention_bias: false,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001, 128_008, 128_009],
        sliding_window: None,
    };
    let plain = DecoderConfig {
        rope_scaling: RopeScaling::None,
        ..llama31.clone()
    };
    let divisors: Vec<f32> = plain
        .rope_inv_freq()
        .iter()
        .zip(llama31.rope_inv_freq())
        .map(|(b, s)| ((f64::from(*b)) / f64::from(s)) as f32)
        .collect();
    let from_gguf = DecoderConfig {
        rope_scaling: RopeScaling::Factors(divisors),
        ..llama31.clone()
    };
    let back = DecoderConfig::from_hf_json(&from_gguf.to_hf_json().expect("to_hf_json"), "rt").expect("reparse");
    assert_eq!(back, llama31);

    // Divisors no rope_scaling can express are an error, not a wrong config.
    let mut rng = SplitMix(3);
    let odd = DecoderConfig {
        rope_scaling: RopeScaling::Factors((0..64).map(|_| 1.0 + 7.0 * rng.sym().abs()).collect()),
        ..llama31
    };
    let e = odd.to_hf_json().expect_err("unfittable divisors").to_string();
    assert!(e.contains("rope_freqs"), "{e}");
}

#[test]
fn add_bos_tokenizers_export_a_bos_template() {
    let root = tempfile::tempdir().expect("tmp");
    let spec = qwen_spec(true);
    let base = write_base(root.path(), &spec, false, 5);
    let dec = Decoder::load(&base, &Device::flex()).expect("base");
    let out = root.path().join("merged");
    // A tokenizer rebuilt from GGUF metadata adds no BOS itself even when the model wants one.
    let assets = tiny_assets(spec.vocab, true);
    assert_eq!(assets.tokenizer.encode("w7 w8", true).expect("encode"), vec![7, 8]);
    save_merged(&dec, &assets, &out, ExportDtype::F32).expect("export");
    let text = TextAssets::from_hf_dir(&out).expect("reload");
    assert!(text.tokenizer.add_bos);
    assert_eq!(text.tokenizer.encode("w7 w8", true).expect("encode"), vec![1, 7, 8]);
    assert_eq!(text.tokenizer.encode("w7 w8", false).expect("encode"), vec![7, 8]);
}

/// Writes `tensors` as a safetensors file (f32).
fn write_st(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.clone()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).expect("serialize")).expect("write");
}

fn read_st(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, v.shape().to_vec(), vals)
        })
        .collect()
}

fn copy_adapter(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

#[test]
fn bad_adapters_are_named() {
    let root = tempfile::tempdir().expect("tmp");
    let spec = llama_spec();
    let base = write_base(root.path(), &spec, false, 6);
    let config = lora_config(0.0);
    let dec = adapted(&base, &config);
    let good = root.path().join("good");
    save_peft_adapter(&dec, &config, "tiny", &good).expect("save");
    let fresh = || Decoder::load(&base, &Device::flex()).expect("base");
    let n = std::cell::Cell::new(0);
    let variant = |edit: &dyn Fn(&Path)| -> PathBuf {
        n.set(n.get() + 1);
        let d = root.path().join(format!("bad{}", n.get()));
        copy_adapter(&good, &d);
        edit(&d);
        d
    };
    let edit_config = |d: &Path, key: &str, value: Value| {
        let mut v = read_json(&d.join(ADAPTER_CONFIG));
        v[key] = value;
        std::fs::write(d.join(ADAPTER_CONFIG), v.to_string()).expect("write");
    };
    let load_err = |d: &Path| load_peft_adapter(d).expect_err("must fail").to_string();

    // Missing files.
    let d = variant(&|d| std::fs::remove_file(d.join(ADAPTER_CONFIG)).expect("rm"));
    let e = load_err(&d);
    assert!(e.contains("adapter_config.json") && e.contains("missing"), "{e}");
    let d = variant(&|d| std::fs::remove_file(d.join(ADAPTER_WEIGHTS)).expect("rm"));
    let e = load_err(&d);
    assert!(e.contains("adapter_model.safetensors") && e.contains("missing"), "{e}");

    // Options sealong does not implement.
    for (key, value) in [
        ("use_dora", json!(true)),
        ("use_rslora", json!(true)),
        ("fan_in_fan_out", json!(true)),
        ("rank_pattern", json!({"q_proj": 8})),
        ("layers_to_transform", json!([0])),
        ("modules_to_save", json!(["lm_head"])),
        ("bias", json!("all")),
        ("init_lora_weights", json!("pissa_niter_4")),
    ] {
        let d = variant(&|d| edit_config(d, key, value.clone()));
        let e = load_err(&d);
        assert!(e.contains(key) && e.contains("adapter_config.json"), "{key}: {e}");
    }
    let d = variant(&|d| edit_config(d, "target_modules", json!(["q_proj", "qkv_proj"])));
    let e = load_err(&d);
    assert!(e.contains("qkv_proj"), "{e}");
    let d = variant(&|d| edit_config(d, "r", json!(8)));
    let e = load_err(&d);
    assert!(e.contains("lora_A.weight") && e.contains("r = 8"), "{e}");

    // A key that is no LoRA matrix of a projection.
    let d = variant(&|d| {
        let mut t = read_st(&d.join(ADAPTER_WEIGHTS));
        t.push((
            "base_model.model.lm_head.lora_A.weight".into(),
            vec![4, 48],
            vec![0.0; 4 * 48],
        ));
        write_st(&d.join(ADAPTER_WEIGHTS), &t);
    });
    let e = load_err(&d);
    assert!(
        e.contains("base_model.model.lm_head.lora_A.weight") && e.contains("adapter_model.safetensors"),
        "{e}"
    );
    // Half of a pair.
    let key = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight";
    let d = variant(&|d| {
        let t: Vec<_> = read_st(&d.join(ADAPTER_WEIGHTS))
            .into_iter()
            .filter(|(n, _, _)| n != key)
            .collect();
        write_st(&d.join(ADAPTER_WEIGHTS), &t);
    });
    let e = load_err(&d);
    assert!(e.contains(key) && e.contains("missing"), "{e}");

    // Shapes that do not fit the model: an adapter of a wider model.
    let wide = TinySpec {
        hidden: 64,
        ..llama_spec()
    };
    let wide_root = root.path().join("wide");
    std::fs::create_dir_all(&wide_root).expect("mkdir");
    let wide_base = write_base(&wide_root, &wide, false, 6);
    let wide_dir = root.path().join("wide_adapter");
    save_peft_adapter(&adapted(&wide_base, &config), &config, "wide", &wide_dir).expect("save");
    let adapter = load_peft_adapter(&wide_dir).expect("loads on its own");
    let e = adapter.apply_to(&mut fresh()).expect_err("wrong shapes").to_string();
    assert!(
        e.contains("lora_A.weight") && e.contains("[4, 64]") && e.contains("[4, 48]"),
        "{e}"
    );
    let (cfg, mut weights) = DecoderWeights::load(&base).expect("weights");
    let e = adapter
        .merge_into(&cfg, &mut weights)
        .expect_err("wrong shapes")
        .to_string();
    assert!(e.contains("lora_A.weight") && e.contains("[4, 64]"), "{e}");
    // An adapter of a deeper model.
    let deep = TinySpec {
        layers: 3,
        ..llama_spec()
    };
    let deep_root = root.path().join("deep");
    std::fs::create_dir_all(&deep_root).expect("mkdir");
    let deep_dir = root.path().join("deep_adapter");
    save_peft_adapter(
        &adapted(&write_base(&deep_root, &deep, false, 6), &config),
        &config,
        "deep",
        &deep_dir,
    )
    .expect("save");
    let e = load_peft_adapter(&deep_dir)
        .expect("loads")
        .apply_to(&mut fresh())
        .expect_err("too many layers")
        .to_string();
    assert!(e.contains("model.layers.2.") && e.contains("2 layers"), "{e}");

    // The CLI reports the file.
    let bad = variant(&|d| edit_config(d, "use_dora", json!(true)));
    let e = sealong(&[
        "generate",
        "--model",
        &base.path().display().to_string(),
        "--device",
        "cpu",
        "--prompt",
        "w5",
        "--adapter",
        &bad.display().to_string(),
    ])
    .expect_err("bad adapter");
    let e = format!("{e:#}");
    assert!(e.contains("use_dora") && e.contains("adapter_config.json"), "{e}");

    // Saving checks the decoder against the config.
    let e = save_peft_adapter(
        &dec,
        &LoraConfig { r: 8, ..config.clone() },
        "x",
        &root.path().join("r8"),
    )
    .expect_err("rank mismatch")
    .to_string();
    assert!(e.contains("rank 4") && e.contains("r = 8"), "{e}");
    let e = save_peft_adapter(&fresh(), &config, "x", &root.path().join("none"))
        .expect_err("no adapters")
        .to_string();
    assert!(e.contains("no LoRA adapter"), "{e}");
}

/// SmolLM2 (Q4_1 GGUF): adapters with small random B on all seven projections, exported
/// merged (f32); the CPU engine on the export generates what the burn decoder with the adapters
/// generates, and the export's tokenizer and template give the golden prompt's ids.
#[test]
fn smollm_merged_export_generates_like_the_adapted_model() {
    let base_path = smollm_path();
    let base = ModelPath::detect(&base_path).expect("detect");
    let assets = TextAssets::load(&base).expect("text assets");
    let mut dec = Decoder::load(&base, &Device::flex()).expect("load SmolLM2");
    let config = LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
    };
    apply_lora(&mut dec, &config, 42).expect("apply_lora");
    randomize_b(&mut dec, 17, 0.02);

    let keep = std::env::var_os("SEALONG_EXPORT_CHECK_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir().expect("tmp");
    let root = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let merged_dir = root.join("merged");
    let adapter_dir = root.join("adapter");
    save_merged(&dec, &assets, &merged_dir, ExportDtype::F32).expect("save_merged");
    save_peft_adapter(&dec, &config, "HuggingFaceTB/SmolLM2-135M-Instruct", &adapter_dir).expect("adapter");

    let chat = golden_json("smollm_chat.json");
    let p = &chat["prompts"][0];
    let golden_ids = ids(p, "ids");
    let merged_text = TextAssets::from_hf_dir(&merged_dir).expect("export text assets");
    assert_eq!(
        merged_text.tokenizer.encode(s(p, "rendered"), false).expect("encode"),
        golden_ids
    );
    assert_eq!(
        assets.tokenizer.encode(s(p, "rendered"), false).expect("encode"),
        golden_ids
    );
    let (_, chat_ids) = merged_text.chat_prompt(s(p, "user_message")).expect("chat prompt");
    assert_eq!(chat_ids, golden_ids);

    let merged = ModelPath::detect(&merged_dir).expect("merged");
    let engine = Engine::load(&merged, &Device::flex(), Precision::Exact).expect("CPU engine on export");
    assert_eq!(engine.name(), "cpu-engine");
    let base_engine = Engine::load(&base, &Device::flex(), Precision::Exact).expect("base engine");
    let (_, adapted_logits) = generate::prefill(&dec, &golden_ids).expect("adapted prefill");
    let (_, merged_logits) = generate::prefill(&engine, &golden_ids).expect("merged prefill");
    let (_, base_logits) = generate::prefill(&base_engine, &golden_ids).expect("base prefill");
    let d = max_diff(
        std::slice::from_ref(&merged_logits),
        std::slice::from_ref(&adapted_logits),
    );
    let moved = max_diff(&[base_logits], std::slice::from_ref(&adapted_logits));
    eprintln!("SmolLM2: max |merged export - adapted burn| = {d:.3e}; the adapter moves logits by {moved:.3}");
    assert!(d <= 1e-3, "last-position logits: merged export vs adapted burn: {d}");
    assert!(moved > 0.05, "the adapter barely changes the logits ({moved})");

    let from_export = greedy(&engine, &golden_ids, 24);
    let from_adapted = greedy(&dec, &golden_ids, 24);
    assert_eq!(from_export, from_adapted);
    assert_eq!(from_export.len(), 24);

    // The Q4_1 GGUF with the adapter beside its quantized weights (`--adapter`).
    let adapter = load_peft_adapter(&adapter_dir).expect("load adapter");
    let beside = engine_with_adapter(&base, &adapter, &Device::flex(), Precision::Exact).expect("engine");
    let (_, beside_logits) = generate::prefill(&beside, &golden_ids).expect("prefill");
    let d = max_diff(&[beside_logits], std::slice::from_ref(&adapted_logits));
    eprintln!("SmolLM2: max |Q4_1 + unmerged adapter - adapted burn| = {d:.3e}");
    assert!(d <= 1e-3, "last-position logits: unmerged adapter vs adapted burn: {d}");
    assert_eq!(greedy(&beside, &golden_ids, 24), from_adapted);

    if keep.is_some() {
        let dump = json!({
            "base_model": base_path, "merged_dir": merged_dir, "adapter_dir": adapter_dir,
            "user_message": s(p, "user_message"), "prompt_ids": golden_ids,
            "adapted_burn_last_logits": adapted_logits, "merged_cpu_last_logits": merged_logits,
            "greedy_ids": from_export,
        });
        std::fs::write(root.join("sealong_logits.json"), dump.to_string()).expect("write logits");
    }
}
