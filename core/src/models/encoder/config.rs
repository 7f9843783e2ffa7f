//! The sentence encoder's configuration: HF `config.json` of a BERT-family model (BERT, MiniLM,
//! RoBERTa, XLM-R) plus the sentence-transformers files around it (`modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The transformer's shape, as HF `config.json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// `bert`, `roberta` or `xlm-roberta`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}

impl EncoderConfig {
    /// Parses `config.json` bytes and checks what this encoder supports.
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self> {
        let c: EncoderConfig = serde_json::from_slice(bytes).map_err(|e| Error::Model {
            path: source.into(),
            message: format!("config.json: {e}"),
        })?;
        let err = |m: String| Error::Model {
            path: source.into(),
            message: m,
        };
        if !matches!(c.model_type.as_str(), "bert" | "roberta" | "xlm-roberta") {
            return Err(err(format!(
                "model_type {:?} is not a supported sentence encoder (bert, roberta, xlm-roberta)",
                c.model_type
            )));
        }
        if !matches!(
            c.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu"
        ) {
            return Err(err(format!("hidden_act {:?} is not supported", c.hidden_act)));
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// RoBERTa-style models number positions from `pad_token_id + 1` (HF
    /// `create_position_ids_from_input_ids`); BERT from 0.
    pub fn position_offset(&self) -> usize {
        if self.model_type == "bert" {
            0
        } else {
            self.pad_token_id + 1
        }
    }

    /// Longest input the position table allows (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }
}

/// How token vectors become one sentence vector (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
    Max,
}

/// The sentence-transformers settings around the transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    /// Tokens per input, special tokens included (`sentence_bert_config.json` max_seq_length).
    pub max_seq_length: usize,
    /// L2-normalize the pooled vector (a `Normalize` module in `modules.json`).
    pub normalize: bool,
}

impl SentenceConfig {
    /// From the optional sentence-transformers files. Without them (a bare HF model): mean
    /// pooling, no normalization, the model's own position limit (sentence-transformers'
    /// defaults for a plain transformer).
    pub fn from_files(
        pooling_json: Option<&[u8]>,
        st_config_json: Option<&[u8]>,
        modules_json: Option<&[u8]>,
        tokenizer_config_json: Option<&[u8]>,
        encoder: &EncoderConfig,
        source: &str,
    ) -> Result<Self> {
        let parse = |b: &[u8], what: &str| -> Result<serde_json::Value> {
            serde_json::from_slice(b).map_err(|e| Error::Model {
                path: source.into(),
                message: format!("{what}: {e}"),
            })
        };
        let mut pooling = Pooling::Mean;
        if let Some(b) = pooling_json {
            let v = parse(b, "1_Pooling/config.json")?;
            let on = |k: &str| v.get(k).and_then(serde_json::Value::as_bool).unwrap_or(false);
            // sentence-transformers 6 writes `"pooling_mode": "mean"`; earlier versions one
            // boolean per mode.
            let mode = v.get("pooling_mode").and_then(serde_json::Value::as_str);
            pooling = if let Some(mode) = mode {
                match mode {
                    "mean" => Pooling::Mean,
                    "cls" => Pooling::Cls,
                    "max" => Pooling::Max,
                    other => {
                        return Err(Error::Model {
                            path: source.into(),
                            message: format!(
                                "1_Pooling/config.json: pooling_mode {other:?} is not supported (mean, cls, max)"
                            ),
                        });
                    }
                }
            } else if on("pooling_mode_cls_token") {
                Pooling::Cls
            } else if on("pooling_mode_max_tokens") {
                Pooling::Max
            } else if on("pooling_mode_mean_tokens") {
                Pooling::Mean
            } else {
                return Err(Error::Model {
                    path: source.into(),
                    message: "1_Pooling/config.json selects no pooling mode this encoder supports (mean, cls, max)"
                        .into(),
                });
            };
        }
        // sentence_bert_config.json's max_seq_length (sentence-transformers up to 5); else the
        // tokenizer's model_max_length, where sentence-transformers 6 saves it (HF writes a
        // huge sentinel there for "no limit"); else the position table's limit.
        let mut limit = None;
        if let Some(b) = st_config_json {
            let v = parse(b, "sentence_bert_config.json")?;
            limit = v.get("max_seq_length").and_then(serde_json::Value::as_u64);
        }
        if limit.is_none()
            && let Some(b) = tokenizer_config_json
        {
            let v = parse(b, "tokenizer_config.json")?;
            limit = v
                .get("model_max_length")
                .and_then(serde_json::Value::as_u64)
                .filter(|&m| m > 0 && m < 1 << 24);
        }
        let max_seq_length = limit.map_or(encoder.max_tokens(), |m| (m as usize).min(encoder.max_tokens()));
        let normalize = match modules_json {
            Some(b) => {
                let v = parse(b, "modules.json")?;
                v.as_array().is_some_and(|mods| {
                    mods.iter().any(|m| {
                        m.get("type")
                            .and_then(serde_json::Value::as_str)
                            // `sentence_transformers.models.Normalize`, or version 6's
                            // `sentence_transformers.base.modules.normalize.Normalize`.
                            .is_some_and(|t| t.ends_with(".Normalize"))
                    })
                })
            }
            None => false,
        };
        Ok(SentenceConfig {
            pooling,
            max_seq_length,
            normalize,
        })
    }
}
