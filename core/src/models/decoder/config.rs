//! The decoder's configuration: one struct mirroring HF `config.json` for the Llama family
//! (Llama 2/3.x, SmolLM2, Qwen2/2.5), filled either from `config.json` or from GGUF metadata.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::loading::gguf::{Gguf, GgufValue};

/// Llama-3 style RoPE frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// How RoPE frequencies are adjusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum RopeScaling {
    #[default]
    None,
    /// Llama 3.1+ scaling of `inv_freq` by wavelength band.
    Llama3(Llama3RopeScaling),
    /// Linear position interpolation (`inv_freq / factor`).
    Linear(f64),
    /// Per-frequency divisors (GGUF `rope_freqs.weight`, how llama.cpp stores Llama-3 scaling).
    Factors(Vec<f32>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// `llama` or `qwen2` (the HF `model_type` / GGUF `general.architecture`).
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v projections (Qwen2).
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation (HF allows a list, e.g. Llama-3's eot and eom).
    pub eos_token_ids: Vec<u32>,
}

impl DecoderConfig {
    /// Checks the shapes fit together.
    pub fn validate(&self, source: &str) -> Result<()> {
        let err = |m: String| {
            Err(Error::Model {
                path: source.to_string(),
                message: m,
            })
        };
        if !matches!(self.model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return err(format!(
                "architecture {:?} is not supported (llama, qwen2 and mistral-style decoders are)",
                self.model_type
            ));
        }
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads)
        {
            return err(format!(
                "{} attention heads is not a multiple of {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return err(format!("head_dim {} must be even and positive", self.head_dim));
        }
        if self.hidden_size == 0 || self.num_hidden_layers == 0 || self.vocab_size == 0 {
            return err("hidden_size, num_hidden_layers and vocab_size must be positive".into());
        }
        Ok(())
    }

    /// From an HF `config.json` (and `generation_config.json` for extra stop ids, if present).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Model {
            path: path.display().to_string(),
            message: format!("malformed JSON: {e}"),
        })?;
        let mut cfg = Self::from_hf_json(&v, &path.display().to_string())?;
        let gen_path = dir.join("generation_config.json");
        if let Ok(bytes) = std::fs::read(&gen_path)
            && let Ok(g) = serde_json::from_slice::<Value>(&bytes)
        {
            for id in ids(g.get("eos_token_id")) {
                if !cfg.eos_token_ids.contains(&id) {
                    cfg.eos_token_ids.push(id);
                }
            }
        }
        Ok(cfg)
    }

    /// From a parsed `config.json` value.
    pub fn from_hf_json(v: &Value, source: &str) -> Result<Self> {
        let missing = |k: &str| Error::Model {
            path: source.to_string(),
            message: format!("config.json has no usable {k:?}"),
        };
        let u = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| missing(k))
        };
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("model_type"))?
            .to_string();
        let hidden_size = u("hidden_size")?;
        let num_attention_heads = u("num_attention_heads")?;
        let num_key_value_heads = u("num_key_value_heads").unwrap_or(num_attention_heads);
        let head_dim = v
            .get("head_dim")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(hidden_size / num_attention_heads.max(1));
        let rope_params = v.get("rope_scaling").or_else(|| v.get("rope_parameters"));
        let rope_theta = v
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| rope_params.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10_000.0);
        let rope_scaling = match rope_params.filter(|r| !r.is_null()) {
            None => RopeScaling::None,
            Some(r) => {
                let ty = r
                    .get("rope_type")
                    .or_else(|| r.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let f = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| missing(&format!("rope_scaling.{k}")))
                };
                match ty {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear(f("factor")?),
                    "llama3" => RopeScaling::Llama3(Llama3RopeScaling {
                        factor: f("factor")?,
                        low_freq_factor: f("low_freq_factor")?,
                        high_freq_factor: f("high_freq_factor")?,
                        original_max_position_embeddings: f("original_max_position_embeddings")? as usize,
                    }),
                    other => {
                        return Err(Error::Model {
                            path: source.to_string(),
                            message: format!(
                                "rope scaling type {other:?} is not supported (default, linear, llama3 are)"
                            ),
                        });
                    }
                }
            }
        };
        let cfg = DecoderConfig {
            attention_bias: v
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(model_type == "qwen2"),
            model_type,
            vocab_size: u("vocab_size")?,
            hidden_size,
            intermediate_size: u("intermediate_size")?,
            num_hidden_layers: u("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: v.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: u("max_position_embeddings").unwrap_or(4096),
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            bos_token_id: ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: ids(v.get("eos_token_id")),
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// From GGUF metadata (`{arch}.*` keys). `rope_freqs` is the `rope_freqs.weight` tensor's
    /// values when the file has one.
    pub fn from_gguf(g: &Gguf, source: &str, rope_freqs: Option<Vec<f32>>) -> Result<Self> {
        let arch = g.architecture().ok_or_else(|| Error::Model {
            path: source.to_string(),
            message: "GGUF has no general.architecture".into(),
        })?;
        let key = |k: &str| format!("{arch}.{k}");
        let missing = |k: &str| Error::Model {
            path: source.to_string(),
            message: format!("GGUF metadata has no usable {k}"),
        };
        let u = |k: &str| -> Result<usize> {
            g.get(&key(k))
                .and_then(GgufValue::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| missing(&key(k)))
        };
        let f = |k: &str| g.get(&key(k)).and_then(GgufValue::as_f64);
        let hidden_size = u("embedding_length")?;
        let num_attention_heads = u("attention.head_count")?;
        let num_key_value_heads = u("attention.head_count_kv").unwrap_or(num_attention_heads);
        let head_dim = u("attention.key_length")
            .or_else(|_| u("rope.dimension_count"))
            .unwrap_or(hidden_size / num_attention_heads.max(1));
        let vocab_size = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => g
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
                .map(<[GgufValue]>::len)
                .ok_or_else(|| missing(&key("vocab_size")))?,
        };
        let scaling_type = g.get(&key("rope.scaling.type")).and_then(GgufValue::as_str);
        let rope_scaling = match (rope_freqs, scaling_type) {
            (Some(factors), _) => RopeScaling::Factors(factors),
            (None, Some("linear")) => RopeScaling::Linear(f("rope.scaling.factor").unwrap_or(1.0)),
            (None, None | Some("none")) => RopeScaling::None,
            (None, Some(other)) => {
                return Err(Error::Model {
                    path: source.to_string(),
                    message: format!("rope scaling type {other:?} is not supported"),
                });
            }
        };
        let id = |k: &str| g.get(k).and_then(GgufValue::as_u64).map(|x| x as u32);
        let mut eos_token_ids: Vec<u32> = Vec::new();
        for k in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(i) = id(k)
                && !eos_token_ids.contains(&i)
            {
                eos_token_ids.push(i);
            }
        }
        let model_type = match arch {
            "llama" | "qwen2" => arch.to_string(),
            other => other.to_string(),
        };
        let cfg = DecoderConfig {
            attention_bias: model_type == "qwen2",
            model_type,
            vocab_size,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: f("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: u("context_length").unwrap_or(4096),
            // Set by the weight loader from whether `output.weight` exists.
            tie_word_embeddings: false,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids,
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// The HF `config.json` of this configuration, as transformers and vLLM read it for a
    /// `LlamaForCausalLM` (or `Qwen2ForCausalLM` when q/k/v have biases: HF Llama's
    /// `attention_bias` would also give `o_proj` a bias, which this decoder does not have).
    /// `torch_dtype` says `float32`; an exporter writing another dtype overwrites it.
    ///
    /// GGUF files keep Llama-3 RoPE scaling only as per-frequency divisors
    /// (`rope_freqs.weight`); config.json cannot hold those, so they are written as the
    /// `llama3` parameters that reproduce them (see [`llama3_from_factors`]), or as `linear`
    /// when every divisor is the same. Divisors no such parameters reproduce are an error.
    pub fn to_hf_json(&self) -> Result<Value> {
        let qwen = self.attention_bias;
        let (architecture, model_type) = if qwen {
            ("Qwen2ForCausalLM", "qwen2")
        } else {
            // Mistral-style configs differ from Llama only in options this decoder does not
            // implement (sliding windows), so what it computes is a Llama.
            ("LlamaForCausalLM", "llama")
        };
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear(factor) => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3(s) => llama3_json(s),
            RopeScaling::Factors(div) => match llama3_from_factors(self, div) {
                Some(FittedRope::None) => Value::Null,
                Some(FittedRope::Linear(factor)) => json!({"rope_type": "linear", "factor": factor}),
                Some(FittedRope::Llama3(s)) => llama3_json(&s),
                None => {
                    return Err(Error::Invalid(
                        "the model's RoPE frequency divisors (GGUF rope_freqs.weight) match no rope_scaling \
                         config.json can express (default, linear, llama3)"
                            .into(),
                    ));
                }
            },
        };
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let mut v = json!({
            "architectures": [architecture],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "initializer_range": 0.02,
            "use_cache": true,
            "torch_dtype": "float32",
        });
        if !qwen {
            v["mlp_bias"] = json!(false);
            v["pretraining_tp"] = json!(1);
        } else {
            // Qwen2's config defaults to a sliding window that transformers would warn about.
            v["use_sliding_window"] = json!(false);
        }
        Ok(v)
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// RoPE inverse frequencies (`1 / theta^(2i/d)`), adjusted by the scaling (HF's
    /// `_compute_llama3_parameters` for Llama-3).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear(factor) => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Factors(div) => base.iter().zip(div).map(|(f, &q)| f / f64::from(q)).collect(),
            RopeScaling::Llama3(s) => {
                let old = s.original_max_position_embeddings as f64;
                let low_wavelen = old / s.low_freq_factor;
                let high_wavelen = old / s.high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / s.factor
                        } else {
                            let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

fn llama3_json(s: &Llama3RopeScaling) -> Value {
    json!({
        "rope_type": "llama3",
        "factor": s.factor,
        "low_freq_factor": s.low_freq_factor,
        "high_freq_factor": s.high_freq_factor,
        "original_max_position_embeddings": s.original_max_position_embeddings,
    })
}

/// What per-frequency RoPE divisors amount to in config.json terms.
#[derive(Debug, Clone, PartialEq)]
pub enum FittedRope {
    /// Every divisor is 1.
    None,
    /// Every divisor is this factor.
    Linear(f64),
    Llama3(Llama3RopeScaling),
}

/// Llama-3 parameters that reproduce the divisors `div` of `config`'s RoPE frequencies, or
/// `None` when none do (checked by recomputing the frequencies: relative error <= 1e-6).
///
/// Why this is solvable: Llama-3 scaling leaves frequencies whose wavelength is under
/// `old / high` alone, divides those over `old / low` by `factor`, and in between mixes the two
/// with weight `s = (old / wavelen - low) / (high - low)`, which is linear in `1 / wavelen`.
/// With `L = low / old` and `H = high / old` everything depends on `(factor, L, H)` only, so
/// `factor` is the largest divisor, two or more in-between frequencies fix `L` and `H` by a
/// line fit, and with fewer any `L < H` between the bands gives the same frequencies. `old` is
/// then chosen as `round(1 / L)` (8192 with `low = 1` for Llama 3.1), and round values of
/// `low` / `high` are preferred when they reproduce the divisors as well.
pub fn llama3_from_factors(config: &DecoderConfig, div: &[f32]) -> Option<FittedRope> {
    let d = config.head_dim;
    if div.len() != d / 2 || div.iter().any(|&q| !q.is_finite() || q <= 0.0) {
        return None;
    }
    let target: Vec<f64> = config.rope_inv_freq().iter().map(|&f| f64::from(f)).collect();
    let matches = |scaling: RopeScaling| -> bool {
        let c = DecoderConfig {
            rope_scaling: scaling,
            ..config.clone()
        };
        c.rope_inv_freq()
            .iter()
            .zip(&target)
            .all(|(&a, &b)| (f64::from(a) - b).abs() <= 1e-6 * b.abs())
    };
    let q: Vec<f64> = div.iter().map(|&x| f64::from(x)).collect();
    let factor = q.iter().copied().fold(f64::MIN, f64::max);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    if q.iter().all(|&x| close(x, 1.0)) {
        return matches(RopeScaling::None).then_some(FittedRope::None);
    }
    if q.iter().all(|&x| close(x, factor)) {
        return matches(RopeScaling::Linear(factor)).then_some(FittedRope::Linear(factor));
    }
    // 1 / wavelength per frequency (decreasing with the index).
    let x: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f64 / d as f64) / (2.0 * std::f64::consts::PI))
        .collect();
    let mut high_min = f64::INFINITY; // smallest 1/wavelen left unscaled
    let mut low_max = 0.0f64; // largest 1/wavelen divided by `factor`
    let mut mid: Vec<(f64, f64)> = Vec::new(); // (1/wavelen, s)
    for (&xi, &qi) in x.iter().zip(&q) {
        if close(qi, 1.0) {
            high_min = high_min.min(xi);
        } else if close(qi, factor) {
            low_max = low_max.max(xi);
        } else {
            // 1/q = (1 - s) / factor + s.
            let s = (1.0 / qi - 1.0 / factor) / (1.0 - 1.0 / factor);
            if !(0.0..1.0).contains(&s) {
                return None;
            }
            mid.push((xi, s));
        }
    }
    if low_max == 0.0 {
        // Without a fully scaled band the largest divisor need not be `factor`.
        return None;
    }
    let (l, h) = match mid.as_slice() {
        [] => {
            let top = if high_min.is_finite() { high_min } else { 2.0 * low_max };
            let gap = top - low_max;
            (low_max + gap / 3.0, low_max + 2.0 * gap / 3.0)
        }
        [(x0, s0)] => {
            // s0 = (x0 - L) / (H - L): take L halfway into the gap below x0, then pull it up
            // if that puts H past the unscaled band.
            let mut l = (low_max + x0) / 2.0;
            let mut h = l + (x0 - l) / s0;
            if high_min.is_finite() && h >= high_min {
                h = (x0 + high_min) / 2.0;
                l = (h - x0 / s0) / (1.0 - 1.0 / s0);
            }
            (l, h)
        }
        pts => {
            let n = pts.len() as f64;
            let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
            let ms = pts.iter().map(|p| p.1).sum::<f64>() / n;
            let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
            let sxs: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - ms)).sum();
            let a = sxs / sxx;
            let b = ms - a * mx;
            (-b / a, -b / a + 1.0 / a)
        }
    };
    if !(l > 0.0 && h > l && l.is_finite() && h.is_finite()) {
        return None;
    }
    let old = (1.0 / l).round().max(1.0);
    let candidate = |low: f64, high: f64| Llama3RopeScaling {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings: old as usize,
    };
    let snap = |v: f64| (v * 1000.0).round() / 1000.0;
    let factor_snapped = snap(factor);
    for s in [
        Llama3RopeScaling {
            factor: factor_snapped,
            ..candidate(snap(l * old), snap(h * old))
        },
        candidate(l * old, h * old),
    ] {
        if s.high_freq_factor > s.low_freq_factor && matches(RopeScaling::Llama3(s.clone())) {
            return Some(FittedRope::Llama3(s));
        }
    }
    None
}
