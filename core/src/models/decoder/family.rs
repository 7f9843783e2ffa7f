//! The decoder families this crate runs, and every fact that differs between them. A family is
//! parsed once (HF `model_type` or GGUF `general.architecture`); the rest of the code asks it
//! (attention biases, llama.cpp's Q/K row order, what `sliding_window` means, the HF class to
//! export as) instead of comparing names. A new family is a variant here.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A supported decoder family. All are the same computation (RMSNorm, RoPE, GQA, SwiGLU);
/// they differ in defaults and in options the family's config can turn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama 2/3.x, SmolLM2 (`LlamaForCausalLM`).
    Llama,
    /// Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`): q/k/v biases, optional sliding window on the
    /// layers from `max_window_layers` on.
    Qwen2,
    /// Mistral (`MistralForCausalLM`): a Llama with a sliding window on every layer.
    Mistral,
}

/// Sliding-window attention: in the marked layers, the query at position `i` sees the keys at
/// positions `j` with `j <= i` and `i - j < size` (transformers' `sliding_window_overlay`:
/// `kv_idx > q_idx - sliding_window`), so `size` keys including its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    pub size: usize,
    /// One entry per layer: whether that layer is windowed.
    pub layers: Vec<bool>,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Llama, Family::Qwen2, Family::Mistral];

    /// The HF `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
        }
    }

    /// The HF class `config.json` names in `architectures`.
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Mistral => "MistralForCausalLM",
        }
    }

    /// The GGUF `general.architecture` values read as this family. llama.cpp writes Mistral
    /// models as `llama` (with permuted Q/K rows); `mistral` is accepted as before.
    fn gguf_architectures(self) -> &'static [&'static str] {
        match self {
            Family::Llama => &["llama"],
            Family::Qwen2 => &["qwen2"],
            Family::Mistral => &["mistral"],
        }
    }

    fn supported() -> String {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.model_type()).collect();
        names.join(", ")
    }

    /// From config.json's `model_type`; an unknown one names the key and the supported families.
    pub fn from_hf_model_type(model_type: &str, source: &str) -> Result<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.model_type() == model_type)
            .ok_or_else(|| Error::Model {
                path: source.to_string(),
                message: format!(
                    "config.json \"model_type\" {model_type:?} is not supported (supported families: {})",
                    Family::supported()
                ),
            })
    }

    /// From GGUF's `general.architecture`; an unknown one names the key and the supported ones.
    pub fn from_gguf_architecture(arch: &str, source: &str) -> Result<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.gguf_architectures().contains(&arch))
            .ok_or_else(|| {
                let all: Vec<&str> = Family::ALL
                    .iter()
                    .flat_map(|f| f.gguf_architectures().iter().copied())
                    .collect();
                Error::Model {
                    path: source.to_string(),
                    message: format!(
                        "GGUF general.architecture {arch:?} is not supported (supported: {})",
                        all.join(", ")
                    ),
                }
            })
    }

    /// Whether q/k/v have biases when the config does not say (`attention_bias`): Qwen2's do.
    pub fn default_attention_bias(self) -> bool {
        matches!(self, Family::Qwen2)
    }

    /// Whether llama.cpp's converter permuted the rows of `attn_q` / `attn_k` in a GGUF of this
    /// architecture (interleaved rotary pairs, llama.cpp's "normal" RoPE), which the loader
    /// undoes. Qwen2 runs with NeoX RoPE in llama.cpp and is stored in HF order.
    pub fn gguf_qk_permuted(self) -> bool {
        matches!(self, Family::Llama)
    }

    /// The sliding window config.json sets, with transformers' meaning per family:
    /// - Llama has none (`LlamaConfig` has no such option).
    /// - Mistral: `sliding_window` (absent: transformers' default 4096; `null`: none) on every
    ///   layer.
    /// - Qwen2: only when `use_sliding_window` is true; then the layers marked
    ///   `"sliding_attention"` in `layer_types` when given, else layers `max_window_layers`
    ///   (default 28) and up (`Qwen2Config.__post_init__`).
    pub fn sliding_window_from_hf(self, v: &Value, layers: usize, source: &str) -> Result<Option<SlidingWindow>> {
        let bad = |k: &str, what: &str| Error::Model {
            path: source.to_string(),
            message: format!("config.json {k:?} {what}"),
        };
        let size = |default: Option<u64>| -> Result<Option<usize>> {
            match v.get("sliding_window") {
                None => Ok(default.map(|d| d as usize)),
                Some(Value::Null) => Ok(None),
                Some(x) => match x.as_u64() {
                    Some(n) if n > 0 => Ok(Some(n as usize)),
                    _ => Err(bad("sliding_window", "must be a positive integer or null")),
                },
            }
        };
        match self {
            Family::Llama => Ok(None),
            Family::Mistral => Ok(size(Some(4096))?.map(|size| SlidingWindow {
                size,
                layers: vec![true; layers],
            })),
            Family::Qwen2 => {
                let on = match v.get("use_sliding_window") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(bad("use_sliding_window", "must be true or false")),
                };
                if !on {
                    return Ok(None);
                }
                let Some(size) = size(Some(4096))? else {
                    return Ok(None);
                };
                let marked = match v.get("layer_types").filter(|t| !t.is_null()) {
                    Some(Value::Array(types)) if types.len() == layers => types
                        .iter()
                        .map(|t| match t.as_str() {
                            Some("sliding_attention") => Ok(true),
                            Some("full_attention") => Ok(false),
                            _ => Err(bad(
                                "layer_types",
                                "entries must be \"full_attention\" or \"sliding_attention\"",
                            )),
                        })
                        .collect::<Result<Vec<bool>>>()?,
                    Some(_) => {
                        return Err(bad("layer_types", &format!("must be a list of {layers} layer types")));
                    }
                    None => {
                        let first = match v.get("max_window_layers") {
                            None | Some(Value::Null) => 28,
                            Some(x) => x
                                .as_u64()
                                .ok_or_else(|| bad("max_window_layers", "must be a non-negative integer"))?
                                as usize,
                        };
                        (0..layers).map(|i| i >= first).collect()
                    }
                };
                Ok(marked
                    .iter()
                    .any(|&m| m)
                    .then_some(SlidingWindow { size, layers: marked }))
            }
        }
    }

    /// The family an HF export is written as, so that transformers computes what this decoder
    /// does: q/k/v biases without an `o_proj` bias only exist in Qwen2 (Llama's
    /// `attention_bias` would add one to `o_proj`), and Qwen2 always has them, so a Qwen2
    /// without biases is written as a Llama (or a Mistral, when its window is on every layer).
    /// `None` when no family expresses the combination.
    pub fn export_as(self, attention_bias: bool, window: Option<&SlidingWindow>) -> Option<Family> {
        let every_layer = window.is_none_or(|w| w.layers.iter().all(|&l| l));
        match (self, attention_bias, window) {
            (_, true, _) => Some(Family::Qwen2),
            (Family::Llama, false, None) | (Family::Qwen2, false, None) => Some(Family::Llama),
            (Family::Mistral, false, _) if every_layer => Some(Family::Mistral),
            (_, false, Some(_)) if every_layer => Some(Family::Mistral),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_supported() {
        for f in Family::ALL {
            assert_eq!(Family::from_hf_model_type(f.model_type(), "x").unwrap(), f);
        }
        let e = Family::from_hf_model_type("gpt_neox", "x").unwrap_err().to_string();
        assert!(
            e.contains("model_type") && e.contains("gpt_neox") && e.contains("llama, qwen2, mistral"),
            "{e}"
        );
        let e = Family::from_gguf_architecture("phi3", "x").unwrap_err().to_string();
        assert!(
            e.contains("general.architecture") && e.contains("phi3") && e.contains("qwen2"),
            "{e}"
        );
    }

    #[test]
    fn sliding_window_follows_transformers() {
        let w = |f: Family, v: Value| f.sliding_window_from_hf(&v, 3, "x").unwrap();
        assert_eq!(w(Family::Llama, json!({"sliding_window": 4})), None);
        assert_eq!(
            w(Family::Mistral, json!({})),
            Some(SlidingWindow {
                size: 4096,
                layers: vec![true; 3]
            })
        );
        assert_eq!(w(Family::Mistral, json!({"sliding_window": null})), None);
        assert_eq!(w(Family::Qwen2, json!({"sliding_window": 4})), None);
        assert_eq!(
            w(
                Family::Qwen2,
                json!({"sliding_window": 4, "use_sliding_window": true, "max_window_layers": 1})
            ),
            Some(SlidingWindow {
                size: 4,
                layers: vec![false, true, true]
            })
        );
        assert_eq!(
            w(
                Family::Qwen2,
                json!({"sliding_window": 4, "use_sliding_window": true, "max_window_layers": 1,
                       "layer_types": ["sliding_attention", "full_attention", "full_attention"]})
            ),
            Some(SlidingWindow {
                size: 4,
                layers: vec![true, false, false]
            })
        );
        assert_eq!(
            w(Family::Qwen2, json!({"sliding_window": 4, "use_sliding_window": true})),
            None
        );
    }
}
