//! Tiny random decoders for tests: written as an HF directory (config.json + safetensors) and as
//! a GGUF file (with llama.cpp's Q/K row permutation), plus a naive f64 forward pass written
//! straight from the HF formulas to check the engines against.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

/// Sizes and options of a tiny model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub model_type: &'static str,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub qkv_bias: bool,
    pub tied: bool,
    /// Llama-3 rope scaling (factor, low, high, original max positions).
    pub llama3_scaling: Option<(f64, f64, f64, usize)>,
    pub rope_theta: f64,
    pub eps: f64,
    pub max_positions: usize,
}

impl TinySpec {
    /// A Llama with GQA, untied head and Llama-3 rope scaling (the engine-parity model).
    pub fn llama() -> TinySpec {
        TinySpec {
            model_type: "llama",
            vocab: 96,
            hidden: 48,
            intermediate: 80,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            qkv_bias: false,
            tied: false,
            llama3_scaling: Some((8.0, 1.0, 4.0, 16)),
            rope_theta: 500_000.0,
            eps: 1e-5,
            max_positions: 64,
        }
    }

    /// [`TinySpec::llama`] as a Qwen2 (q/k/v biases, tied head, plain rope).
    pub fn qwen2() -> TinySpec {
        TinySpec {
            model_type: "qwen2",
            qkv_bias: true,
            tied: true,
            llama3_scaling: None,
            rope_theta: 10_000.0,
            eps: 1e-6,
            ..TinySpec::llama()
        }
    }

    /// Qwen2.5-0.5B's shape (24 layers, 896 wide, 4,864 MLP, 14 heads over 2 KV heads of 64, a
    /// 151,936 vocabulary, tied head, q/k/v biases, rope theta 1e6) with a `context` of positions.
    pub fn qwen25_05b_shape(context: usize) -> TinySpec {
        TinySpec {
            model_type: "qwen2",
            vocab: 151_936,
            hidden: 896,
            intermediate: 4_864,
            layers: 24,
            heads: 14,
            kv_heads: 2,
            head_dim: 64,
            qkv_bias: true,
            tied: true,
            llama3_scaling: None,
            rope_theta: 1_000_000.0,
            eps: 1e-6,
            max_positions: context,
        }
    }

    /// This spec 64 wide with a 96-wide MLP (the tiny specs' 4 × 16 heads over 2 kv heads still
    /// fill it): every matrix row is whole 32-value blocks, so Q8_0 and f16/bf16 matrices stay
    /// in their stored format.
    pub fn in_whole_blocks(self) -> TinySpec {
        TinySpec {
            hidden: 64,
            intermediate: 96,
            ..self
        }
    }

    /// A smaller Llama with a tied head (the training tests' model: fast under autodiff).
    pub fn small() -> TinySpec {
        TinySpec {
            model_type: "llama",
            vocab: 64,
            hidden: 32,
            intermediate: 48,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            qkv_bias: false,
            tied: true,
            llama3_scaling: None,
            rope_theta: 10_000.0,
            eps: 1e-5,
            max_positions: 64,
        }
    }
}

/// Named weights (HF names, row-major f32 values and shapes).
pub type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The LCG behind [`random_weights`]: values in [-1, 1), the same on every machine.
fn lcg(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 1.0) as f32
    }
}

/// One tensor of a random model: HF name, shape, and its values' `offset + scale · U[-1, 1)`.
struct RandomTensor {
    name: String,
    shape: Vec<usize>,
    scale: f32,
    offset: f32,
}

/// The tensors of `spec` in the order [`random_weights`] draws them. Matrices get `matrix_scale`.
fn random_tensors(spec: &TinySpec, matrix_scale: f32, embed_scale: f32) -> Vec<RandomTensor> {
    let mut list = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        list.push(RandomTensor {
            name,
            shape,
            scale,
            offset,
        });
    };
    let (d, hd, m) = (spec.hidden, spec.head_dim, matrix_scale);
    put(
        "model.embed_tokens.weight".into(),
        vec![spec.vocab, d],
        embed_scale,
        0.0,
    );
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), vec![d], 0.2, 1.0);
        put(format!("{p}.post_attention_layernorm.weight"), vec![d], 0.2, 1.0);
        put(format!("{p}.self_attn.q_proj.weight"), vec![spec.heads * hd, d], m, 0.0);
        put(
            format!("{p}.self_attn.k_proj.weight"),
            vec![spec.kv_heads * hd, d],
            m,
            0.0,
        );
        put(
            format!("{p}.self_attn.v_proj.weight"),
            vec![spec.kv_heads * hd, d],
            m,
            0.0,
        );
        if spec.qkv_bias {
            put(format!("{p}.self_attn.q_proj.bias"), vec![spec.heads * hd], 0.2, 0.0);
            put(format!("{p}.self_attn.k_proj.bias"), vec![spec.kv_heads * hd], 0.2, 0.0);
            put(format!("{p}.self_attn.v_proj.bias"), vec![spec.kv_heads * hd], 0.2, 0.0);
        }
        put(format!("{p}.self_attn.o_proj.weight"), vec![d, spec.heads * hd], m, 0.0);
        put(format!("{p}.mlp.gate_proj.weight"), vec![spec.intermediate, d], m, 0.0);
        put(format!("{p}.mlp.up_proj.weight"), vec![spec.intermediate, d], m, 0.0);
        put(format!("{p}.mlp.down_proj.weight"), vec![d, spec.intermediate], m, 0.0);
    }
    put("model.norm.weight".into(), vec![d], 0.2, 1.0);
    if !spec.tied {
        put("lm_head.weight".into(), vec![spec.vocab, d], embed_scale, 0.0);
    }
    list
}

/// Deterministic pseudo-random weights (a small LCG: no dependency, same on every machine).
pub fn random_weights(spec: &TinySpec, seed: u64) -> Weights {
    let mut next = lcg(seed);
    random_tensors(spec, 0.3, 0.5)
        .into_iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let v = (0..n).map(|_| t.offset + t.scale * next()).collect();
            (t.name, (t.shape, v))
        })
        .collect()
}

/// The HF `config.json` of `spec`.
pub fn hf_config(spec: &TinySpec) -> Value {
    let mut c = json!({
        "model_type": spec.model_type,
        "architectures": [if spec.model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "vocab_size": spec.vocab, "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim, "rms_norm_eps": spec.eps, "rope_theta": spec.rope_theta,
        "max_position_embeddings": spec.max_positions, "tie_word_embeddings": spec.tied,
        "attention_bias": spec.qkv_bias, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    });
    if let Some((factor, low, high, orig)) = spec.llama3_scaling {
        c["rope_scaling"] = json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
            "high_freq_factor": high, "original_max_position_embeddings": orig});
    }
    c
}

/// Writes `weights` as an HF directory (`config.json` + `model.safetensors`, F32).
pub fn write_hf_dir(dir: &Path, spec: &TinySpec, weights: &Weights) {
    write_hf_dir_as(dir, spec, weights, safetensors::Dtype::F32);
}

/// `weights` with every value rounded to `dtype` (F32, F16 or BF16) and back: the values a model
/// stored in that dtype holds.
pub fn rounded(weights: &Weights, dtype: safetensors::Dtype) -> Weights {
    weights
        .iter()
        .map(|(n, (shape, v))| {
            let r = v.iter().map(|&x| from_bytes(dtype, &to_bytes(dtype, x))).collect();
            (n.clone(), (shape.clone(), r))
        })
        .collect()
}

fn to_bytes(dtype: safetensors::Dtype, x: f32) -> Vec<u8> {
    match dtype {
        safetensors::Dtype::F32 => x.to_le_bytes().to_vec(),
        safetensors::Dtype::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
        safetensors::Dtype::BF16 => half::bf16::from_f32(x).to_le_bytes().to_vec(),
        other => panic!("the tiny writer writes F32, F16 and BF16, not {other:?}"),
    }
}

fn from_bytes(dtype: safetensors::Dtype, b: &[u8]) -> f32 {
    match dtype {
        safetensors::Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        safetensors::Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    }
}

/// Writes `weights` as an HF directory with every tensor stored as `dtype` (F32, F16 or BF16).
pub fn write_hf_dir_as(dir: &Path, spec: &TinySpec, weights: &Weights, dtype: safetensors::Dtype) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&hf_config(spec)).expect("json"),
    )
    .expect("write");
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .iter()
        .map(|(n, (shape, v))| {
            (
                n.clone(),
                v.iter().flat_map(|&x| to_bytes(dtype, x)).collect(),
                shape.clone(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let data = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(dir.join("model.safetensors"), data).expect("write");
}

/// GGUF name of an HF tensor name.
fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return (*g).to_string();
    }
    let rest = hf.strip_prefix("model.layers.").expect("layer tensor");
    let (l, suffix) = rest.split_once('.').expect("dot");
    let g = match suffix {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{l}.{g}")
}

/// llama.cpp's converter permutation of Q/K rows (HF rotate-half -> interleaved pairs):
/// GGUF row `h*hd + 2i + j` = HF row `h*hd + j*hd/2 + i`.
fn permute_for_gguf(v: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0.0; v.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let g = h * hd + 2 * i + j;
                let f = h * hd + j * hd / 2 + i;
                out[g * cols..(g + 1) * cols].copy_from_slice(&v[f * cols..(f + 1) * cols]);
            }
        }
    }
    out
}

fn enc_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// The metadata of a GGUF for `spec` (llama or qwen2 architecture).
fn gguf_metadata(spec: &TinySpec) -> Vec<(String, u32, Vec<u8>)> {
    let arch = spec.model_type;
    let mut kv: Vec<(String, u32, Vec<u8>)> = Vec::new();
    let u32kv = |k: &str, v: u32| (format!("{arch}.{k}"), 4u32, v.to_le_bytes().to_vec());
    let f32kv = |k: &str, v: f32| (format!("{arch}.{k}"), 6u32, v.to_le_bytes().to_vec());
    kv.push(("general.architecture".into(), 8, enc_str(arch)));
    kv.push(u32kv("block_count", spec.layers as u32));
    kv.push(u32kv("context_length", spec.max_positions as u32));
    kv.push(u32kv("embedding_length", spec.hidden as u32));
    kv.push(u32kv("feed_forward_length", spec.intermediate as u32));
    kv.push(u32kv("attention.head_count", spec.heads as u32));
    kv.push(u32kv("attention.head_count_kv", spec.kv_heads as u32));
    kv.push(u32kv("rope.dimension_count", spec.head_dim as u32));
    kv.push(u32kv("vocab_size", spec.vocab as u32));
    kv.push(f32kv("rope.freq_base", spec.rope_theta as f32));
    kv.push(f32kv("attention.layer_norm_rms_epsilon", spec.eps as f32));
    kv.push(("tokenizer.ggml.eos_token_id".into(), 4, 2u32.to_le_bytes().to_vec()));
    kv
}

/// One tensor's GGUF header entry: name, shape (row-major), ggml type id, data bytes.
struct GgufEntry {
    name: String,
    shape: Vec<usize>,
    ggml_type: u32,
    bytes: usize,
}

const GGML_F32: u32 = 0;
const GGML_Q8_0: u32 = 8;

/// Writes a GGUF v3 file: the header for `entries`, then each tensor's data from `data(i, out)`
/// (exactly `entries[i].bytes` bytes), 32-byte aligned, one tensor in memory at a time.
fn write_gguf_file(
    path: &Path,
    kv: &[(String, u32, Vec<u8>)],
    entries: &[GgufEntry],
    mut data: impl FnMut(usize, &mut Vec<u8>),
) {
    use std::io::Write;
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((entries.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (k, ty, v) in kv {
        out.extend(enc_str(k));
        out.extend(ty.to_le_bytes());
        out.extend(v);
    }
    let mut offset = 0u64;
    for e in entries {
        out.extend(enc_str(&e.name));
        out.extend((e.shape.len() as u32).to_le_bytes());
        for d in e.shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(e.ggml_type.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (e.bytes as u64).div_ceil(32) * 32;
    }
    let pad = |buf: &mut Vec<u8>| buf.resize(buf.len().div_ceil(32) * 32, 0);
    pad(&mut out);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create gguf"));
    file.write_all(&out).expect("write gguf");
    for (i, e) in entries.iter().enumerate() {
        out.clear();
        data(i, &mut out);
        assert_eq!(out.len(), e.bytes, "{}: data size", e.name);
        pad(&mut out);
        file.write_all(&out).expect("write gguf");
    }
    file.flush().expect("write gguf");
}

/// GGUF rows of an HF tensor: llama.cpp permutes a Llama's Q/K rows, not a Qwen2's.
fn gguf_values(spec: &TinySpec, hf: &str, shape: &[usize], v: &[f32]) -> Vec<f32> {
    match (spec.model_type, hf) {
        ("llama", n) if n.ends_with("q_proj.weight") => permute_for_gguf(v, shape[0], shape[1], spec.heads),
        ("llama", n) if n.ends_with("k_proj.weight") => permute_for_gguf(v, shape[0], shape[1], spec.kv_heads),
        _ => v.to_vec(),
    }
}

/// Writes a GGUF of `weights` (F32 tensors, Q/K permuted as llama.cpp stores a Llama's).
pub fn write_gguf(path: &Path, spec: &TinySpec, weights: &Weights) {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = weights
        .iter()
        .map(|(hf, (shape, v))| (gguf_name(hf), shape.clone(), gguf_values(spec, hf, shape, v)))
        .collect();
    // llama.cpp stores Llama-3 scaling as per-frequency divisors in `rope_freqs.weight`.
    if let Some(scaling) = spec.llama3_scaling {
        let factors = llama3_freq_factors(spec, scaling);
        tensors.push(("rope_freqs.weight".into(), vec![factors.len()], factors));
    }
    let entries: Vec<GgufEntry> = tensors
        .iter()
        .map(|(name, shape, v)| GgufEntry {
            name: name.clone(),
            shape: shape.clone(),
            ggml_type: GGML_F32,
            bytes: 4 * v.len(),
        })
        .collect();
    write_gguf_file(path, &gguf_metadata(spec), &entries, |i, out| {
        out.extend(tensors[i].2.iter().flat_map(|x| x.to_le_bytes()));
    });
}

/// ggml's reference Q8_0 quantizer (`quantize_row_q8_0_ref`): per 32 values an f16 scale
/// `max|x| / 127` and 32 signed bytes `round(x / scale)`.
pub fn quantize_q8_0(values: &[f32], out: &mut Vec<u8>) {
    assert!(values.len().is_multiple_of(32), "Q8_0 rows are whole blocks of 32");
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|x| (x * id).round() as i8 as u8));
    }
}

/// Writes a random model of `spec` straight to a GGUF with every matrix in Q8_0 (vectors F32),
/// one tensor in memory at a time: models of a real size (Qwen2.5-0.5B's shape) without a
/// multi-GiB f32 copy. Values are drawn as [`random_weights`] draws them, with matrices at
/// `±1/√hidden` and the embedding at ±0.05 so that a deep stack stays finite.
pub fn write_random_gguf_q8_0(path: &Path, spec: &TinySpec, seed: u64) {
    assert!(
        spec.llama3_scaling.is_none(),
        "the Q8_0 writer writes models without rope_freqs"
    );
    let list = random_tensors(spec, 1.0 / (spec.hidden as f32).sqrt(), 0.05);
    let entries: Vec<GgufEntry> = list
        .iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let q8 = t.shape.len() == 2;
            GgufEntry {
                name: gguf_name(&t.name),
                shape: t.shape.clone(),
                ggml_type: if q8 { GGML_Q8_0 } else { GGML_F32 },
                bytes: if q8 { n / 32 * 34 } else { 4 * n },
            }
        })
        .collect();
    let mut next = lcg(seed);
    write_gguf_file(path, &gguf_metadata(spec), &entries, |i, out| {
        let t = &list[i];
        let n: usize = t.shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| t.offset + t.scale * next()).collect();
        let v = gguf_values(spec, &t.name, &t.shape, &v);
        if entries[i].ggml_type == GGML_Q8_0 {
            quantize_q8_0(&v, out);
        } else {
            out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
    });
}

/// Base RoPE inverse frequencies of `spec` (f64).
fn base_inv_freq(spec: &TinySpec) -> Vec<f64> {
    let d = spec.head_dim;
    (0..d / 2)
        .map(|i| 1.0 / spec.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect()
}

/// HF `_compute_llama3_parameters`, written out independently.
fn llama3_inv_freq(spec: &TinySpec, (factor, low, high, orig): (f64, f64, f64, usize)) -> Vec<f64> {
    let orig = orig as f64;
    base_inv_freq(spec)
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < orig / high {
                f
            } else if wavelen > orig / low {
                f / factor
            } else {
                let smooth = (orig / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

/// The divisors llama.cpp writes to `rope_freqs.weight` (base / scaled).
fn llama3_freq_factors(spec: &TinySpec, scaling: (f64, f64, f64, usize)) -> Vec<f32> {
    base_inv_freq(spec)
        .iter()
        .zip(llama3_inv_freq(spec, scaling))
        .map(|(b, s)| (b / s) as f32)
        .collect()
}

/// Naive f64 forward: logits `[ids.len(), vocab]` for one sequence, straight from the HF
/// formulas (RMSNorm, rotate-half RoPE, GQA causal attention, SwiGLU).
pub fn reference_logits(spec: &TinySpec, weights: &Weights, ids: &[u32]) -> Vec<Vec<f64>> {
    let get = |n: &str| -> Vec<f64> { weights[n].1.iter().map(|&x| f64::from(x)).collect() };
    let (d, hd, h, kvh) = (spec.hidden, spec.head_dim, spec.heads, spec.kv_heads);
    let s = ids.len();
    let matvec = |w: &[f64], rows: usize, cols: usize, x: &[f64]| -> Vec<f64> {
        (0..rows)
            .map(|r| (0..cols).map(|c| w[r * cols + c] * x[c]).sum())
            .collect()
    };
    let rms = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + spec.eps).sqrt();
        x.iter().zip(w).map(|(v, w)| w * v * inv).collect()
    };
    let inv_freq = match spec.llama3_scaling {
        Some(sc) => llama3_inv_freq(spec, sc),
        None => base_inv_freq(spec),
    };
    let rope = |v: &mut [f64], pos: usize| {
        let half = hd / 2;
        let orig = v.to_vec();
        for i in 0..half {
            let a = pos as f64 * inv_freq[i];
            let (sn, cs) = a.sin_cos();
            v[i] = orig[i] * cs - orig[i + half] * sn;
            v[i + half] = orig[i + half] * cs + orig[i] * sn;
        }
    };
    let emb = get("model.embed_tokens.weight");
    let mut x: Vec<Vec<f64>> = ids
        .iter()
        .map(|&t| emb[t as usize * d..(t as usize + 1) * d].to_vec())
        .collect();
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        let (wq, wk, wv, wo) = (
            get(&format!("{p}.self_attn.q_proj.weight")),
            get(&format!("{p}.self_attn.k_proj.weight")),
            get(&format!("{p}.self_attn.v_proj.weight")),
            get(&format!("{p}.self_attn.o_proj.weight")),
        );
        let bias = |n: &str, len: usize| {
            if spec.qkv_bias {
                get(&format!("{p}.self_attn.{n}.bias"))
            } else {
                vec![0.0; len]
            }
        };
        let (bq, bk, bv) = (
            bias("q_proj", h * hd),
            bias("k_proj", kvh * hd),
            bias("v_proj", kvh * hd),
        );
        let norm1 = get(&format!("{p}.input_layernorm.weight"));
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, xi) in x.iter().enumerate() {
            let xn = rms(xi, &norm1);
            let mut q: Vec<f64> = matvec(&wq, h * hd, d, &xn)
                .iter()
                .zip(&bq)
                .map(|(a, b)| a + b)
                .collect();
            let mut k: Vec<f64> = matvec(&wk, kvh * hd, d, &xn)
                .iter()
                .zip(&bk)
                .map(|(a, b)| a + b)
                .collect();
            let v: Vec<f64> = matvec(&wv, kvh * hd, d, &xn)
                .iter()
                .zip(&bv)
                .map(|(a, b)| a + b)
                .collect();
            q.chunks_exact_mut(hd).for_each(|c| rope(c, pos));
            k.chunks_exact_mut(hd).for_each(|c| rope(c, pos));
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let g = h / kvh;
        let scale = 1.0 / (hd as f64).sqrt();
        for i in 0..s {
            let mut attn = vec![0.0; h * hd];
            for head in 0..h {
                let kv = head / g;
                let q = &qs[i][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        q.iter()
                            .zip(&ks[j][kv * hd..(kv + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|v| (v - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for t in 0..hd {
                        attn[head * hd + t] += ej / z * vs[j][kv * hd + t];
                    }
                }
            }
            let o = matvec(&wo, d, h * hd, &attn);
            x[i].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        }
        let norm2 = get(&format!("{p}.post_attention_layernorm.weight"));
        let (wg, wu, wd) = (
            get(&format!("{p}.mlp.gate_proj.weight")),
            get(&format!("{p}.mlp.up_proj.weight")),
            get(&format!("{p}.mlp.down_proj.weight")),
        );
        for xi in x.iter_mut() {
            let xn = rms(xi, &norm2);
            let gate = matvec(&wg, spec.intermediate, d, &xn);
            let up = matvec(&wu, spec.intermediate, d, &xn);
            let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let down = matvec(&wd, d, spec.intermediate, &act);
            xi.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
    }
    let norm = get("model.norm.weight");
    let head = if spec.tied {
        get("model.embed_tokens.weight")
    } else {
        get("lm_head.weight")
    };
    x.iter()
        .map(|xi| matvec(&head, spec.vocab, d, &rms(xi, &norm)))
        .collect()
}
