//! LoRA on the burn decoder (PEFT's layout and initialization) and the choice of trainable
//! parameters: adapters only with a frozen base, or full fine-tuning.
//!
//! Training runs on an autodiff device (`Device::flex().autodiff()` or a GPU's): there the
//! loader keeps every weight dense in f32 (host-quantized matrices exist only without
//! autodiff), and a parameter is trainable when its tensor is an autodiff leaf that requires a
//! gradient. Everything else is a constant of the graph.

use burn::prelude::*;
use burn::tensor::Gradients;

use crate::error::{Error, Result};
use crate::models::decoder::Decoder;
use crate::nn::linear::LoraAdapter;
use crate::nn::{Linear, LinearWeight};

pub use crate::models::decoder::adapter::{LoraConfig, LoraTarget};

/// What a training run updates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    /// Adapters on a frozen base.
    Lora(LoraConfig),
    /// Every base weight (embeddings, norms, projections; a tied head with the embeddings).
    Full,
}

pub(crate) fn target_linear(layer: &mut crate::models::decoder::model::DecoderLayer, t: LoraTarget) -> &mut Linear {
    match t {
        LoraTarget::QProj => &mut layer.q_proj,
        LoraTarget::KProj => &mut layer.k_proj,
        LoraTarget::VProj => &mut layer.v_proj,
        LoraTarget::OProj => &mut layer.o_proj,
        LoraTarget::GateProj => &mut layer.gate_proj,
        LoraTarget::UpProj => &mut layer.up_proj,
        LoraTarget::DownProj => &mut layer.down_proj,
    }
}

/// Kaiming-uniform `[rows, cols]` as PEFT initializes `lora_A` (`kaiming_uniform_(a=sqrt(5))`:
/// uniform in `±1/sqrt(cols)`), from the stream `(seed, label)`.
fn kaiming_uniform(rows: usize, cols: usize, seed: u64, label: &str) -> Vec<f32> {
    use rand::RngExt;
    let bound = 1.0 / (cols as f64).sqrt();
    let mut rng = crate::rng::for_item(seed, label);
    (0..rows * cols)
        .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
        .collect()
}

/// Adds LoRA adapters to the targets of every layer: `A` kaiming-uniform from `seed`, `B` zero
/// (so the adapted model starts equal to the base). The adapters are trainable leaves when
/// `decoder.device` is an autodiff device; the base is left as it is (see
/// [`set_trainable`]). Replaces adapters already present.
pub fn apply_lora(decoder: &mut Decoder, config: &LoraConfig, seed: u64) -> Result<()> {
    config.check()?;
    let device = decoder.device.clone();
    let scaling = config.scaling();
    for (i, layer) in decoder.layers.iter_mut().enumerate() {
        for &t in &config.targets {
            let name = format!("model.layers.{i}.{}.{}", t.parent(), t.name());
            let lin = target_linear(layer, t);
            let [out, inp] = lin.weight.dims();
            let a = kaiming_uniform(config.r, inp, seed, &format!("lora_A/{name}"));
            let mut a = Tensor::<2>::from_data(TensorData::new(a, [config.r, inp]), &device);
            let mut b = Tensor::<2>::zeros([out, config.r], &device);
            if device.is_autodiff() {
                a = a.require_grad();
                b = b.require_grad();
            }
            lin.lora = Some(LoraAdapter {
                a,
                b,
                scaling,
                dropout: config.dropout,
                dropout_key: None,
                name,
            });
        }
        // The fused host-quantized products would bypass the adapters.
        layer.fused_qkv = None;
        layer.fused_gate_up = None;
    }
    Ok(())
}

/// Turns adapter dropout on for one step (`Some((seed, step))`) or off (`None`).
pub fn set_lora_dropout(decoder: &mut Decoder, key: Option<(u64, u64)>) {
    for layer in &mut decoder.layers {
        for t in LoraTarget::ALL {
            if let Some(a) = target_linear(layer, t).lora.as_mut() {
                a.dropout_key = key;
            }
        }
    }
}

/// Folds every adapter into its base weight (`W += scaling * B A`) and removes it. The merged
/// weights are plain (non-leaf-tracked) values.
pub fn merge_lora(decoder: &mut Decoder) -> Result<()> {
    for layer in &mut decoder.layers {
        for t in LoraTarget::ALL {
            let lin = target_linear(layer, t);
            if let Some(ad) = lin.lora.take() {
                let delta = ad.b.detach().matmul(ad.a.detach()).mul_scalar(ad.scaling);
                lin.weight = match &lin.weight {
                    LinearWeight::Dense(w) => LinearWeight::Dense(w.clone().detach() + delta),
                    // A base kept in its storage format (a LoRA run on the CPU): merged in f32.
                    q @ LinearWeight::Quant(_) => LinearWeight::Dense(q.to_dense(&delta.device()) + delta),
                };
            }
        }
    }
    Ok(())
}

/// A parameter of the decoder, by rank.
#[derive(Debug)]
pub enum ParamMut<'a> {
    Vector(&'a mut Tensor<1>),
    Matrix(&'a mut Tensor<2>),
}

/// Visits every dense parameter under its HF / PEFT name: `model.embed_tokens.weight`,
/// `model.layers.{i}.input_layernorm.weight`, `...self_attn.q_proj.weight`, `...q_proj.bias`,
/// `...q_proj.lora_A.weight`, `...q_proj.lora_B.weight`, `model.norm.weight`, `lm_head.weight`
/// (only when untied: a tied head is the embedding matrix and follows it). Host-quantized
/// matrices are not parameters and are skipped.
pub fn visit_params_mut(decoder: &mut Decoder, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
    let tied = decoder.config.tie_word_embeddings;
    if let LinearWeight::Dense(t) = &mut decoder.embed.table {
        f("model.embed_tokens.weight", ParamMut::Matrix(t));
        if tied {
            decoder.lm_head.weight = LinearWeight::Dense(t.clone());
        }
    }
    for (i, layer) in decoder.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        f(
            &format!("{p}.input_layernorm.weight"),
            ParamMut::Vector(&mut layer.input_norm),
        );
        f(
            &format!("{p}.post_attention_layernorm.weight"),
            ParamMut::Vector(&mut layer.post_norm),
        );
        for t in LoraTarget::ALL {
            let name = format!("{p}.{}.{}", t.parent(), t.name());
            let lin = target_linear(layer, t);
            visit_linear(&name, lin, f);
        }
    }
    f("model.norm.weight", ParamMut::Vector(&mut decoder.norm));
    if !tied {
        visit_linear("lm_head", &mut decoder.lm_head, f);
    }
}

fn visit_linear(name: &str, lin: &mut Linear, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
    if let LinearWeight::Dense(w) = &mut lin.weight {
        f(&format!("{name}.weight"), ParamMut::Matrix(w));
    }
    if let Some(b) = lin.bias.as_mut() {
        f(&format!("{name}.bias"), ParamMut::Vector(b));
    }
    if let Some(ad) = lin.lora.as_mut() {
        f(&format!("{name}.lora_A.weight"), ParamMut::Matrix(&mut ad.a));
        f(&format!("{name}.lora_B.weight"), ParamMut::Matrix(&mut ad.b));
    }
}

fn set_grad<const D: usize>(t: &mut Tensor<D>, on: bool) {
    let leaf = t.clone().detach();
    *t = if on {
        leaf.require_grad()
    } else {
        leaf.set_require_grad(false)
    };
}

/// Makes exactly the parameters `select` accepts trainable (autodiff leaves that require a
/// gradient) and every other one a constant; returns the names made trainable. Needs an
/// autodiff device.
pub fn set_trainable(decoder: &mut Decoder, select: &dyn Fn(&str) -> bool) -> Result<Vec<String>> {
    if !decoder.device.is_autodiff() {
        return Err(Error::Invalid(
            "training needs the decoder on an autodiff device (e.g. Device::flex().autodiff())".into(),
        ));
    }
    // A weight kept in its storage format (the CPU backend) becomes an f32 master weight when
    // it is to train; frozen ones stay as they are.
    let device = decoder.device.clone();
    for (i, layer) in decoder.layers.iter_mut().enumerate() {
        let mut any = false;
        for t in LoraTarget::ALL {
            if select(&format!("model.layers.{i}.{}.{}.weight", t.parent(), t.name())) {
                target_linear(layer, t).weight.densify(&device);
                any = true;
            }
        }
        if any {
            layer.fused_qkv = None;
            layer.fused_gate_up = None;
        }
    }
    if select("model.embed_tokens.weight") {
        decoder.embed.table.densify(&device);
    }
    if select("lm_head.weight") || (decoder.config.tie_word_embeddings && select("model.embed_tokens.weight")) {
        decoder.lm_head.weight.densify(&device);
    }
    let mut names = Vec::new();
    visit_params_mut(decoder, &mut |name, p| {
        let on = select(name);
        if on {
            names.push(name.to_string());
        }
        match p {
            ParamMut::Vector(t) => set_grad(t, on),
            ParamMut::Matrix(t) => set_grad(t, on),
        }
    });
    // `visit_params_mut` re-ties the head before the embeddings change; tie it again.
    if decoder.config.tie_word_embeddings
        && let LinearWeight::Dense(t) = &decoder.embed.table
    {
        decoder.lm_head.weight = LinearWeight::Dense(t.clone());
    }
    Ok(names)
}

/// Sets up `mode`: LoRA adds adapters (seeded by `seed`) and trains only them; `Full` trains
/// every base weight. Returns the trainable parameter names.
pub fn prepare_training(decoder: &mut Decoder, mode: &TrainMode, seed: u64) -> Result<Vec<String>> {
    match mode {
        TrainMode::Lora(config) => {
            apply_lora(decoder, config, seed)?;
            set_trainable(decoder, &|n| n.contains(".lora_A.") || n.contains(".lora_B."))
        }
        // Full fine-tuning keeps f32 master weights (set_trainable expands a quantized base).
        TrainMode::Full => set_trainable(decoder, &|n| !n.contains(".lora_")),
    }
}

/// The gradient of every trainable parameter that got one, by name.
pub fn gradients(decoder: &mut Decoder, grads: &Gradients) -> Vec<(String, TensorData)> {
    let mut out = Vec::new();
    visit_params_mut(decoder, &mut |name, p| {
        let g = match p {
            ParamMut::Vector(t) => t.grad(grads).map(|g| g.into_data()),
            ParamMut::Matrix(t) => t.grad(grads).map(|g| g.into_data()),
        };
        if let Some(g) = g {
            out.push((name.to_string(), g));
        }
    });
    out
}
