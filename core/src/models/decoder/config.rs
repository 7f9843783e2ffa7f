//! The decoder's configuration: one struct mirroring HF `config.json` for the Llama-style
//! families of [`Family`] (Llama 2/3.x, SmolLM2, Qwen2/2.5, Mistral), filled either from
//! `config.json` or from GGUF metadata.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::loading::gguf::{Gguf, GgufValue};
pub use crate::models::decoder::family::{Family, SlidingWindow};

/// Llama-3 style RoPE frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// YaRN RoPE scaling (`rope_scaling.rope_type == "yarn"`), as transformers'
/// `_compute_yarn_parameters`: frequencies blended between interpolated (`/ factor`) and
/// extrapolated by a linear ramp over the dimensions between the `beta_fast` and `beta_slow`
/// rotation counts of the original context, and cos/sin multiplied by an attention factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YarnRopeScaling {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    /// Default 32.
    pub beta_fast: f64,
    /// Default 1.
    pub beta_slow: f64,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
    /// The cos/sin multiplier when given; else derived from `factor` (and `mscale`s).
    pub attention_factor: Option<f64>,
    /// Whether the correction range is rounded outwards to whole dimensions (default true).
    pub truncate: bool,
}

impl YarnRopeScaling {
    /// The factor transformers multiplies cos and sin by.
    pub fn attention_scaling(&self) -> f64 {
        if let Some(a) = self.attention_factor {
            return a;
        }
        let get_mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(all)) if m != 0.0 && all != 0.0 => get_mscale(self.factor, m) / get_mscale(self.factor, all),
            _ => get_mscale(self.factor, 1.0),
        }
    }

    /// The frequencies from the unscaled ones (`base[i] = theta^(-2i/d)`), in f32 as torch
    /// computes them.
    fn inv_freq(&self, theta: f64, d: usize) -> Vec<f32> {
        let find_dim = |rot: f64| {
            (d as f64 * (self.original_max_position_embeddings as f64 / (rot * 2.0 * std::f64::consts::PI)).ln())
                / (2.0 * theta.ln())
        };
        let (mut low, mut high) = (find_dim(self.beta_fast), find_dim(self.beta_slow));
        if self.truncate {
            low = low.floor();
            high = high.ceil();
        }
        let low = low.max(0.0) as f32;
        let mut high = high.min(d as f64 - 1.0) as f32;
        if low == high {
            high += 0.001;
        }
        let factor = self.factor as f32;
        (0..d / 2)
            .map(|i| {
                let pos_freq = (theta as f32).powf((2 * i) as f32 / d as f32);
                let extrapolation = 1.0 / pos_freq;
                let interpolation = 1.0 / (factor * pos_freq);
                let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                let extrapolation_factor = 1.0 - ramp;
                interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
            })
            .collect()
    }
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
    /// YaRN (Qwen2.5's long-context setting).
    Yarn(YarnRopeScaling),
}

/// The rope types config.json may name, for error messages.
const SUPPORTED_ROPE_TYPES: &str = "default, linear, llama3, yarn";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// The family (HF `model_type` / GGUF `general.architecture`); serialized as `model_type`.
    #[serde(rename = "model_type")]
    pub family: Family,
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
    /// Sliding-window attention (Mistral; Qwen2 with `use_sliding_window`), `None` for full
    /// causal attention everywhere.
    #[serde(default)]
    pub sliding_window: Option<SlidingWindow>,
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
        if let Some(w) = &self.sliding_window
            && (w.size == 0 || w.layers.len() != self.num_hidden_layers)
        {
            return err(format!(
                "sliding window of {} positions over {} layer flags for {} layers",
                w.size,
                w.layers.len(),
                self.num_hidden_layers
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
        if self.head_dim > MAX_HEAD_DIM {
            return err(format!(
                "head_dim {} is more than the {MAX_HEAD_DIM} this loader accepts",
                self.head_dim
            ));
        }
        if self.hidden_size == 0 || self.num_hidden_layers == 0 || self.vocab_size == 0 {
            return err("hidden_size, num_hidden_layers and vocab_size must be positive".into());
        }
        check_layer_count(self.num_hidden_layers, "num_hidden_layers", source)?;
        if let RopeScaling::Factors(div) = &self.rope_scaling {
            if div.len() != self.head_dim / 2 {
                return err(format!(
                    "tensor \"rope_freqs.weight\" has {} values, but head_dim {} needs {} (one divisor per \
                     rotary frequency)",
                    div.len(),
                    self.head_dim,
                    self.head_dim / 2
                ));
            }
            if let Some((i, v)) = div.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
                return err(format!(
                    "tensor \"rope_freqs.weight\" value {i} is {v}; divisors must be finite and positive"
                ));
            }
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
        let family = Family::from_hf_model_type(
            v.get("model_type")
                .and_then(Value::as_str)
                .ok_or_else(|| missing("model_type"))?,
            source,
        )?;
        let hidden_size = u("hidden_size")?;
        let num_attention_heads = u("num_attention_heads")?;
        let num_key_value_heads = u("num_key_value_heads").unwrap_or(num_attention_heads);
        let head_dim = v
            .get("head_dim")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(hidden_size / num_attention_heads.max(1));
        let (rope_key, rope_params) = match v.get("rope_scaling").filter(|r| !r.is_null()) {
            Some(r) => ("rope_scaling", Some(r)),
            None => ("rope_parameters", v.get("rope_parameters")),
        };
        let rope_theta = v
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| rope_params.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10_000.0);
        let max_position_embeddings = u("max_position_embeddings").unwrap_or(4096);
        let rope_scaling = match rope_params.filter(|r| !r.is_null()) {
            None => RopeScaling::None,
            Some(r) => {
                let type_key = if r.get("rope_type").is_some() {
                    "rope_type"
                } else {
                    "type"
                };
                let ty = r.get(type_key).and_then(Value::as_str).unwrap_or("default");
                let f = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| missing(&format!("{rope_key}.{k}")))
                };
                let opt = |k: &str| r.get(k).and_then(Value::as_f64);
                match ty {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear(f("factor")?),
                    "llama3" => RopeScaling::Llama3(Llama3RopeScaling {
                        factor: f("factor")?,
                        low_freq_factor: f("low_freq_factor")?,
                        high_freq_factor: f("high_freq_factor")?,
                        original_max_position_embeddings: f("original_max_position_embeddings")? as usize,
                    }),
                    "yarn" => {
                        // transformers' standardize_rope_params: a top-level
                        // original_max_position_embeddings wins, then the rope dict's, then the
                        // context; a missing factor is their ratio.
                        let original = v
                            .get("original_max_position_embeddings")
                            .and_then(Value::as_u64)
                            .or_else(|| r.get("original_max_position_embeddings").and_then(Value::as_u64))
                            .map_or(max_position_embeddings, |x| x as usize);
                        if original == 0 {
                            return Err(missing(&format!("{rope_key}.original_max_position_embeddings")));
                        }
                        RopeScaling::Yarn(YarnRopeScaling {
                            factor: opt("factor").unwrap_or(max_position_embeddings as f64 / original as f64),
                            original_max_position_embeddings: original,
                            beta_fast: opt("beta_fast").filter(|&b| b != 0.0).unwrap_or(32.0),
                            beta_slow: opt("beta_slow").filter(|&b| b != 0.0).unwrap_or(1.0),
                            mscale: opt("mscale"),
                            mscale_all_dim: opt("mscale_all_dim"),
                            attention_factor: opt("attention_factor"),
                            truncate: r.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                        })
                    }
                    other => {
                        return Err(Error::Model {
                            path: source.to_string(),
                            message: format!(
                                "config.json \"{rope_key}.{type_key}\" {other:?} is not supported (supported rope types: {SUPPORTED_ROPE_TYPES})"
                            ),
                        });
                    }
                }
            }
        };
        let num_hidden_layers = u("num_hidden_layers")?;
        // Checked before anything is sized by it (the sliding window's per-layer flags).
        check_layer_count(num_hidden_layers, "config.json \"num_hidden_layers\"", source)?;
        let sliding_window = family.sliding_window_from_hf(v, num_hidden_layers, source)?;
        let cfg = DecoderConfig {
            attention_bias: v
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(family.default_attention_bias()),
            family,
            vocab_size: u("vocab_size")?,
            hidden_size,
            intermediate_size: u("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: v.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            bos_token_id: ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: ids(v.get("eos_token_id")),
            sliding_window,
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
        let family = Family::from_gguf_architecture(arch, source)?;
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
            // What llama.cpp's converter writes for `rope_scaling.type == "yarn"`; its YaRN
            // defaults are transformers' (beta 32 / 1, attention factor 1 + 0.1 ln(factor)).
            (None, Some("yarn")) => RopeScaling::Yarn(YarnRopeScaling {
                factor: f("rope.scaling.factor").ok_or_else(|| missing(&key("rope.scaling.factor")))?,
                original_max_position_embeddings: u("rope.scaling.original_context_length")?,
                beta_fast: f("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
                beta_slow: f("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
                mscale: None,
                mscale_all_dim: None,
                attention_factor: None,
                truncate: true,
            }),
            (None, Some(other)) => {
                return Err(Error::Model {
                    path: source.to_string(),
                    message: format!(
                        "GGUF {} {other:?} is not supported (supported: none, linear, yarn, or llama3 as rope_freqs.weight)",
                        key("rope.scaling.type")
                    ),
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
        let cfg = DecoderConfig {
            attention_bias: family.default_attention_bias(),
            family,
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
            // llama.cpp runs its `llama` and `qwen2` architectures with full attention.
            sliding_window: None,
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// The HF `config.json` of this configuration, as transformers and vLLM read it: the class
    /// of [`Family::export_as`] (`LlamaForCausalLM`, `Qwen2ForCausalLM` when q/k/v have biases:
    /// HF Llama's `attention_bias` would also give `o_proj` a bias, which this decoder does not
    /// have; `MistralForCausalLM` for Mistral), with the sliding window where there is one.
    /// `torch_dtype` says `float32`; an exporter writing another dtype overwrites it.
    ///
    /// GGUF files keep Llama-3 RoPE scaling only as per-frequency divisors
    /// (`rope_freqs.weight`); config.json cannot hold those, so they are written as the
    /// `llama3` parameters that reproduce them (see [`llama3_from_factors`]), or as `linear`
    /// when every divisor is the same. Divisors no such parameters reproduce are an error.
    pub fn to_hf_json(&self) -> Result<Value> {
        let window = self.sliding_window.as_ref();
        let target = self.family.export_as(self.attention_bias, window).ok_or_else(|| {
            Error::Invalid(format!(
                "a {} model without q/k/v biases whose sliding window covers only some layers has no HF \
                 config.json class (Qwen2 always has the biases, Mistral windows every layer)",
                self.family
            ))
        })?;
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear(factor) => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3(s) => llama3_json(s),
            RopeScaling::Yarn(s) => {
                let mut j = json!({
                    "rope_type": "yarn",
                    "factor": s.factor,
                    "original_max_position_embeddings": s.original_max_position_embeddings,
                    "beta_fast": s.beta_fast,
                    "beta_slow": s.beta_slow,
                });
                for (k, x) in [
                    ("mscale", s.mscale),
                    ("mscale_all_dim", s.mscale_all_dim),
                    ("attention_factor", s.attention_factor),
                ] {
                    if let Some(x) = x {
                        j[k] = json!(x);
                    }
                }
                if !s.truncate {
                    j["truncate"] = json!(false);
                }
                j
            }
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
            "architectures": [target.hf_architecture()],
            "model_type": target.model_type(),
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
        match target {
            Family::Llama => {
                v["mlp_bias"] = json!(false);
                v["pretraining_tp"] = json!(1);
            }
            Family::Qwen2 => match window {
                // Qwen2's config defaults to a sliding window that transformers would warn about.
                None => v["use_sliding_window"] = json!(false),
                Some(w) => {
                    v["use_sliding_window"] = json!(true);
                    v["sliding_window"] = json!(w.size);
                    v["max_window_layers"] = json!(w.layers.iter().position(|&l| l).unwrap_or(w.layers.len()));
                    v["layer_types"] = w
                        .layers
                        .iter()
                        .map(|&l| if l { "sliding_attention" } else { "full_attention" })
                        .collect();
                }
            },
            Family::Mistral => v["sliding_window"] = json!(window.map(|w| w.size)),
        }
        Ok(v)
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The sliding window of layer `layer`, if it has one.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        self.sliding_window
            .as_ref()
            .filter(|w| w.layers.get(layer).copied().unwrap_or(false))
            .map(|w| w.size)
    }

    /// What RoPE's cos and sin are multiplied by (transformers' `attention_scaling`): YaRN's
    /// attention factor, else 1.
    pub fn rope_attention_scaling(&self) -> f32 {
        match &self.rope_scaling {
            RopeScaling::Yarn(s) => s.attention_scaling() as f32,
            _ => 1.0,
        }
    }

    /// RoPE inverse frequencies (`1 / theta^(2i/d)`), adjusted by the scaling (HF's
    /// `_compute_llama3_parameters` for Llama-3, `_compute_yarn_parameters` for YaRN).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        if let RopeScaling::Yarn(s) = &self.rope_scaling {
            return s.inv_freq(self.rope_theta, d);
        }
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            RopeScaling::None | RopeScaling::Yarn(_) => base,
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

/// More decoder layers than any model has (the largest have ~130); a header asking for more is
/// corrupt, and per-layer tables would be sized by it.
pub const MAX_LAYERS: usize = 4096;

/// The largest head dimension accepted. Released models use 64 to 256; a config's number is
/// outside input, and the RoPE tables are sized by it before any weight is read, so
/// `"head_dim": 2147483648` asked for gigabytes (issue 17's fuzzing).
pub const MAX_HEAD_DIM: usize = 4096;

fn check_layer_count(n: usize, key: &str, source: &str) -> Result<()> {
    if n > MAX_LAYERS {
        return Err(Error::Model {
            path: source.to_string(),
            message: format!("{key} is {n}, more than the {MAX_LAYERS} layers this loader accepts"),
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loading::gguf::tests::GgufBuilder;

    /// Issue 17: `rope_freqs.weight`'s length was never checked against the head dimension.
    #[test]
    fn rope_freqs_must_have_one_divisor_per_frequency() {
        // head_dim 64 / 4 = 16: 8 rotary frequencies.
        let bytes = GgufBuilder::default()
            .string("general.architecture", "llama")
            .u32("llama.embedding_length", 64)
            .u32("llama.attention.head_count", 4)
            .u32("llama.feed_forward_length", 32)
            .u32("llama.block_count", 1)
            .u32("llama.vocab_size", 10)
            .build();
        let g = Gguf::parse(&bytes, "m.gguf").expect("parse");
        let c = DecoderConfig::from_gguf(&g, "m.gguf", Some(vec![2.0; 8])).expect("8 divisors");
        assert_eq!(c.rope_inv_freq().len(), 8);
        for n in [0, 7, 9, 64] {
            let e = DecoderConfig::from_gguf(&g, "m.gguf", Some(vec![2.0; n]))
                .expect_err("wrong length")
                .to_string();
            assert!(
                e.starts_with("model m.gguf: tensor \"rope_freqs.weight\" has")
                    && e.contains(&format!("has {n} values, but head_dim 16 needs 8")),
                "{n}: {e}"
            );
        }
        let mut bad = vec![2.0; 8];
        bad[3] = 0.0;
        let e = DecoderConfig::from_gguf(&g, "m.gguf", Some(bad))
            .expect_err("zero")
            .to_string();
        assert!(e.contains("\"rope_freqs.weight\" value 3 is 0"), "{e}");
    }

    /// A Mistral's sliding-window flags are one per layer: a layer count of 2^50 asked for a
    /// petabyte before anything checked it.
    #[test]
    fn a_huge_layer_count_is_refused_before_anything_is_sized_by_it() {
        let mut v = serde_json::json!({"model_type": "mistral", "vocab_size": 4, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1u64 << 50, "num_attention_heads": 2,
            "sliding_window": 16});
        let e = DecoderConfig::from_hf_json(&v, "dir").expect_err("huge").to_string();
        assert_eq!(
            e,
            format!(
                "model dir: config.json \"num_hidden_layers\" is {}, more than the 4096 layers this loader accepts",
                1u64 << 50
            )
        );
        v["num_hidden_layers"] = serde_json::json!(4096);
        let c = DecoderConfig::from_hf_json(&v, "dir").expect("4096 layers");
        assert_eq!(c.sliding_window.map(|w| w.layers.len()), Some(4096));
        let bytes = GgufBuilder::default()
            .string("general.architecture", "llama")
            .u32("llama.embedding_length", 64)
            .u32("llama.attention.head_count", 4)
            .u32("llama.feed_forward_length", 32)
            .u32("llama.block_count", 4097)
            .u32("llama.vocab_size", 10)
            .build();
        let g = Gguf::parse(&bytes, "m.gguf").expect("parse");
        let e = DecoderConfig::from_gguf(&g, "m.gguf", None)
            .expect_err("4097")
            .to_string();
        assert!(e.contains("num_hidden_layers is 4097"), "{e}");
    }
}
