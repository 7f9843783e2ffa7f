//! The merged export: a whole HF model directory from the burn decoder, adapters folded in.

use std::path::Path;

use burn::prelude::*;
use serde_json::{Value, json};

use super::{host_values, linear_of, write_json};
use crate::error::{Error, Result};
use crate::files;
use crate::loading::TextAssets;
use crate::loading::safetensors::{ExportDtype, Planned, write_safetensors};
use crate::models::decoder::Decoder;
use crate::models::decoder::adapter::{LoraTarget, module_name};
use crate::nn::Linear;

/// A linear layer's weight with its adapter folded in, as host f32 (`[out, in]`).
fn merged_weight(lin: &Linear, device: &Device, name: &str) -> Result<Vec<f32>> {
    let w = lin.weight.to_dense(device).detach();
    let w = match &lin.lora {
        Some(ad) => {
            w + ad
                .b
                .clone()
                .detach()
                .matmul(ad.a.clone().detach())
                .mul_scalar(ad.scaling)
        }
        None => w,
    };
    host_values(w, name)
}

/// The tokenizer as tokenizer.json text. When the model wants a BOS before raw text
/// (`add_bos_token`) but the tokenizer's post-processor does not add one (the tokenizer rebuilt
/// from GGUF metadata never does: llama.cpp adds it itself), a BOS template is appended to the
/// post-processor, as Llama-3's own tokenizer.json has, so transformers' `tokenizer(text)`
/// gives what the original model expects.
fn tokenizer_json(assets: &TextAssets) -> Result<String> {
    let tok = &assets.tokenizer;
    let src = tok.source().to_string();
    let text = tok.inner().to_string(false).map_err(|e| Error::tokenizer(&src, e))?;
    let (Some(bos_id), Some(bos)) = (tok.bos_id, tok.bos_token.clone()) else {
        return Ok(text);
    };
    if !tok.add_bos || tok.encode("", true)?.first() == Some(&bos_id) {
        return Ok(text);
    }
    let mut v: Value = serde_json::from_str(&text).map_err(|e| Error::tokenizer(&src, e))?;
    let special = |type_id: u32| json!({"SpecialToken": {"id": bos, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let template = json!({
        "type": "TemplateProcessing",
        "single": [special(0), seq("A", 0)],
        "pair": [special(0), seq("A", 0), special(1), seq("B", 1)],
        "special_tokens": {bos.clone(): {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    });
    let old = v["post_processor"].take();
    v["post_processor"] = if old.is_null() {
        template
    } else {
        json!({"type": "Sequence", "processors": [old, template]})
    };
    serde_json::to_string(&v).map_err(|e| Error::tokenizer(&src, e))
}

/// Writes a merged HF model directory from the burn decoder (adapters, if any, folded into
/// their weights; the decoder is not changed): `config.json` ([`DecoderConfig::to_hf_json`]),
/// `model.safetensors` (HF names, `dtype`; a tied head is not written, as HF does),
/// `tokenizer.json`, `tokenizer_config.json` (chat template, special tokens, `add_bos_token`),
/// `special_tokens_map.json` and `generation_config.json` (stop ids). transformers
/// (`AutoModelForCausalLM` / `AutoTokenizer`), vLLM and `sealong generate` load it.
///
/// The decoder's weights are already in HF row order (the GGUF loader undoes llama.cpp's Q/K
/// permutation), so a GGUF base exports as its HF original would.
pub fn save_merged(decoder: &Decoder, assets: &TextAssets, dir: &Path, dtype: ExportDtype) -> Result<()> {
    let c = &decoder.config;
    let mut config_json = c.to_hf_json()?;
    config_json["torch_dtype"] = json!(dtype.torch_name());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        // Loaders read the index before model.safetensors, so the export would be ignored.
        return Err(Error::Invalid(format!(
            "{} exists (a sharded checkpoint); export into an empty directory",
            index.display()
        )));
    }
    let device = &decoder.device;
    let mut planned: Vec<Planned<'_>> = Vec::new();
    let (d, v) = (c.hidden_size, c.vocab_size);
    planned.push(Planned {
        name: "model.embed_tokens.weight".into(),
        shape: vec![v, d],
        values: Box::new(move || host_values(decoder.embed.table.to_dense(device), "model.embed_tokens.weight")),
    });
    for (i, layer) in decoder.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        for (name, t) in [
            (format!("{p}.input_layernorm.weight"), &layer.input_norm),
            (format!("{p}.post_attention_layernorm.weight"), &layer.post_norm),
        ] {
            planned.push(Planned {
                shape: t.dims().to_vec(),
                values: Box::new(move || host_values(t.clone(), "norm weight")),
                name,
            });
        }
        for t in LoraTarget::ALL {
            let lin = linear_of(layer, t);
            let module = module_name(i, t);
            let name = format!("{module}.weight");
            planned.push(Planned {
                shape: lin.weight.dims().to_vec(),
                values: Box::new(move || merged_weight(lin, device, &format!("{module}.weight"))),
                name,
            });
            if let Some(b) = &lin.bias {
                planned.push(Planned {
                    name: format!("{}.bias", module_name(i, t)),
                    shape: b.dims().to_vec(),
                    values: Box::new(move || host_values(b.clone(), "bias")),
                });
            }
        }
    }
    planned.push(Planned {
        name: "model.norm.weight".into(),
        shape: vec![d],
        values: Box::new(move || host_values(decoder.norm.clone(), "model.norm.weight")),
    });
    if !c.tie_word_embeddings {
        planned.push(Planned {
            name: "lm_head.weight".into(),
            shape: vec![v, d],
            values: Box::new(move || merged_weight(&decoder.lm_head, device, "lm_head.weight")),
        });
    }
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    write_safetensors(&dir.join("model.safetensors"), &planned, dtype)?;

    let tok = &assets.tokenizer;
    let tok_json = tokenizer_json(assets)?;
    files::write_atomic_with(&dir.join("tokenizer.json"), |w| {
        w.write_all(tok_json.as_bytes())
            .map_err(|e| Error::io(dir.join("tokenizer.json"), e))
    })?;
    let pad = tok.pad_id.and_then(|i| tok.id_to_token(i));
    let mut specials = serde_json::Map::new();
    for (key, value) in [
        ("bos_token", &tok.bos_token),
        ("eos_token", &tok.eos_token),
        ("pad_token", &pad),
    ] {
        if let Some(s) = value {
            specials.insert(key.into(), json!(s));
        }
    }
    let mut tok_config = json!({
        "add_bos_token": tok.add_bos,
        "add_eos_token": false,
        // sealong decodes without clean-up; so should transformers.
        "clean_up_tokenization_spaces": false,
        "model_max_length": c.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    for (k, s) in &specials {
        tok_config[k] = s.clone();
    }
    if let Some(t) = &assets.chat_template {
        tok_config["chat_template"] = json!(t.source());
    }
    write_json(&dir.join("tokenizer_config.json"), &tok_config)?;
    write_json(&dir.join("special_tokens_map.json"), &Value::Object(specials))?;

    let mut stop = c.eos_token_ids.clone();
    if let Some(e) = tok.eos_id
        && !stop.contains(&e)
    {
        stop.push(e);
    }
    let mut generation = json!({
        "bos_token_id": c.bos_token_id.or(tok.bos_id),
        "eos_token_id": if stop.len() == 1 { json!(stop[0]) } else { json!(stop) },
    });
    if let Some(p) = tok.pad_id {
        generation["pad_token_id"] = json!(p);
    }
    write_json(&dir.join("generation_config.json"), &generation)?;
    // Last: config.json is what makes the directory a model to loaders.
    write_json(&dir.join("config.json"), &config_json)
}
