//! The PEFT adapter export: the decoder's LoRA adapters as `adapter_model.safetensors` and
//! `adapter_config.json`, and a read adapter put back on the burn decoder to continue training.

use std::path::Path;

use burn::prelude::*;
use serde_json::{Value, json};

use super::{host_values, linear_of, write_json};
use crate::error::{Error, Result};
use crate::loading::safetensors::{ExportDtype, Planned, write_safetensors};
use crate::models::decoder::Decoder;
use crate::models::decoder::adapter::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraConfig, LoraTarget, PeftAdapter, module_name, peft_key,
};
use crate::nn::linear::LoraAdapter;
use crate::train::lora::target_linear;

/// A number as PEFT writes it: an integer when it is one (`lora_alpha: 16`).
fn peft_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// `adapter_config.json` as peft writes it for a LoRA CAUSAL_LM adapter (sorted keys, as its
/// `json.dumps(sort_keys=True)`); only keys every peft version since 0.10 knows, so older
/// peft loads it too.
fn peft_config_json(config: &LoraConfig, base_model_name: &str) -> Value {
    let targets: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
    json!({
        "alpha_pattern": {},
        "base_model_name_or_path": base_model_name,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": peft_number(config.alpha),
        "lora_dropout": config.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": config.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false,
    })
}

/// The decoder's adapters by module name, checked against `config`: every configured target
/// of every layer has one, none is elsewhere, and each has rank `r` and scaling `alpha / r`.
fn decoder_adapters<'d>(decoder: &'d Decoder, config: &LoraConfig) -> Result<Vec<(String, &'d LoraAdapter)>> {
    let mut out = Vec::new();
    for (i, layer) in decoder.layers.iter().enumerate() {
        for t in LoraTarget::ALL {
            let name = module_name(i, t);
            let listed = config.targets.contains(&t);
            match (&linear_of(layer, t).lora, listed) {
                (None, false) => {}
                (None, true) => {
                    return Err(Error::Invalid(format!(
                        "{name} has no LoRA adapter although the LoRA config targets {}",
                        t.name()
                    )));
                }
                (Some(_), false) => {
                    return Err(Error::Invalid(format!(
                        "{name} has a LoRA adapter but the LoRA config does not target {}",
                        t.name()
                    )));
                }
                (Some(ad), true) => {
                    let [r, _] = ad.a.dims();
                    if r != config.r || ad.b.dims()[1] != config.r {
                        return Err(Error::Invalid(format!(
                            "the adapter of {name} has rank {r}, the LoRA config says r = {}",
                            config.r
                        )));
                    }
                    if (ad.scaling - config.scaling()).abs() > 1e-9 * config.scaling().abs() {
                        return Err(Error::Invalid(format!(
                            "the adapter of {name} scales by {}, the LoRA config by alpha / r = {}",
                            ad.scaling,
                            config.scaling()
                        )));
                    }
                    out.push((name, ad));
                }
            }
        }
    }
    Ok(out)
}

/// Writes the decoder's LoRA adapters as a PEFT adapter directory: `adapter_model.safetensors`
/// (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` `[r, in]` and
/// `...lora_B.weight` `[out, r]`, f32) and `adapter_config.json` (written last: a directory
/// with a config holds a whole adapter). `base_model_name` goes to `base_model_name_or_path`.
pub fn save_peft_adapter(decoder: &Decoder, config: &LoraConfig, base_model_name: &str, dir: &Path) -> Result<()> {
    config.check()?;
    let adapters = decoder_adapters(decoder, config)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut planned = Vec::with_capacity(2 * adapters.len());
    for (name, ad) in &adapters {
        for (which, t) in [("lora_A", &ad.a), ("lora_B", &ad.b)] {
            let key = peft_key(name, which);
            planned.push(Planned {
                shape: t.dims().to_vec(),
                values: Box::new(move || host_values(t.clone(), &format!("adapter {}", peft_key(name, which)))),
                name: key,
            });
        }
    }
    // safetensors writers sort by name; do the same so equal adapters give equal bytes.
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &planned, ExportDtype::F32)?;
    write_json(&dir.join(ADAPTER_CONFIG), &peft_config_json(config, base_model_name))
}

impl PeftAdapter {
    /// Puts the adapters on the burn decoder's projections (replacing any there), as
    /// [`crate::train::apply_lora`] would with these values: on an autodiff device they are
    /// trainable leaves, so training can continue from the adapter.
    pub fn apply_to(&self, decoder: &mut Decoder) -> Result<()> {
        self.check_against(&decoder.config)?;
        let device = decoder.device.clone();
        let scaling = self.config.scaling();
        for (i, layer) in decoder.layers.iter_mut().enumerate() {
            for t in LoraTarget::ALL {
                let lin = target_linear(layer, t);
                lin.lora = None;
                let Some(p) = self.modules.get(&module_name(i, t)) else {
                    continue;
                };
                let mut a = Tensor::<2>::from_data(TensorData::new(p.a.clone(), p.a_shape), &device);
                let mut b = Tensor::<2>::from_data(TensorData::new(p.b.clone(), p.b_shape), &device);
                if device.is_autodiff() {
                    a = a.require_grad();
                    b = b.require_grad();
                }
                lin.lora = Some(LoraAdapter {
                    a,
                    b,
                    scaling,
                    dropout: self.config.dropout,
                    dropout_key: None,
                    name: module_name(i, t),
                });
            }
            // The fused host-quantized products would bypass the adapters.
            layer.fused_qkv = None;
            layer.fused_gate_up = None;
        }
        Ok(())
    }
}
