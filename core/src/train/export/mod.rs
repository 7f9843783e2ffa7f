//! The files a trained model is handed over in.
//!
//! - A PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`, as
//!   peft's `save_pretrained` writes them for a CAUSAL_LM LoRA; [`save_peft_adapter`], in
//!   `peft.rs`): peft loads it onto the base model; sealong reads it back with
//!   [`load_peft_adapter`](crate::models::decoder::adapter::load_peft_adapter) (next to the
//!   decoder, which runs it beside the CPU engine's quantized weights or merged:
//!   `sealong generate|eval --adapter`) and puts it on the burn decoder to keep training it
//!   ([`PeftAdapter::apply_to`](crate::models::decoder::adapter::PeftAdapter::apply_to)).
//! - A merged HF model directory ([`save_merged`], in `merged.rs`): config.json,
//!   model.safetensors and the tokenizer files, which transformers, vLLM and `sealong generate`
//!   load like any checkpoint.
//!
//! Every file is written to a temporary name in the target directory and renamed into place,
//! so a killed export leaves either the old file or the new one, never half of one. The
//! safetensors writer is `loading::safetensors::write_safetensors`.

use std::path::Path;

use burn::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::files;
use crate::models::decoder::adapter::LoraTarget;
use crate::nn::Linear;

mod merged;
mod peft;

pub use merged::save_merged;
pub use peft::save_peft_adapter;

pub(super) fn write_json(path: &Path, value: &Value) -> Result<()> {
    files::write_atomic_with(path, |w| {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Invalid(format!("{e}")))?;
        bytes.push(b'\n');
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// A burn tensor's values on the host.
pub(super) fn host_values<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.detach()
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Invalid(format!("reading {what}: {e:?}")))
}

pub(super) fn linear_of(layer: &crate::models::decoder::model::DecoderLayer, t: LoraTarget) -> &Linear {
    match t {
        LoraTarget::QProj => &layer.q_proj,
        LoraTarget::KProj => &layer.k_proj,
        LoraTarget::VProj => &layer.v_proj,
        LoraTarget::OProj => &layer.o_proj,
        LoraTarget::GateProj => &layer.gate_proj,
        LoraTarget::UpProj => &layer.up_proj,
        LoraTarget::DownProj => &layer.down_proj,
    }
}
