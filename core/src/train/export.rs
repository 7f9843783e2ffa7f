//! The files a trained model is handed over in.
//!
//! - A PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`, as
//!   peft's `save_pretrained` writes them for a CAUSAL_LM LoRA): peft loads it onto the base
//!   model; sealong loads it back ([`load_peft_adapter`]) onto the burn decoder (to run or to
//!   keep training it), beside the CPU engine's quantized weights ([`engine_with_adapter`]:
//!   `sealong generate|eval --adapter`), or merged into the loaded weights for other engines.
//! - A merged HF model directory ([`save_merged`]): config.json, model.safetensors and the
//!   tokenizer files, which transformers, vLLM and `sealong generate` load like any checkpoint.
//!
//! Every file is written to a temporary name in the target directory and renamed into place,
//! so a killed export leaves either the old file or the new one, never half of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::files;
use crate::loading::ModelPath;
use crate::loading::TextAssets;
use crate::loading::safetensors::read_dense;
use crate::loading::weight::{Weight, WeightData};
use crate::models::decoder::weights::DecoderWeights;
use crate::models::decoder::{CpuDecoder, Decoder, DecoderConfig, Engine};
use crate::nn::Linear;
use crate::nn::linear::LoraAdapter;
use crate::nn::linear::{Precision, is_host_cpu};
use crate::train::lora::{LoraConfig, LoraTarget, target_linear};

/// PEFT's adapter config file name.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's adapter weights file name (safetensors serialization, peft's default).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What `PeftModelForCausalLM.state_dict()` puts before the base model's own names.
const PEFT_PREFIX: &str = "base_model.model.";

/// Element type of exported model weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportDtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl ExportDtype {
    fn safetensors_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "F32",
            ExportDtype::Bf16 => "BF16",
            ExportDtype::F16 => "F16",
        }
    }

    /// The `torch_dtype` config.json records.
    pub fn torch_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "float32",
            ExportDtype::Bf16 => "bfloat16",
            ExportDtype::F16 => "float16",
        }
    }

    fn bytes(self) -> usize {
        match self {
            ExportDtype::F32 => 4,
            ExportDtype::Bf16 | ExportDtype::F16 => 2,
        }
    }

    /// Appends `values` in this type (round to nearest even, as torch's `.to()` does). A
    /// finite value that f16 cannot hold is an error naming the tensor, not a silent inf.
    fn encode(self, name: &str, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
        out.reserve(values.len() * self.bytes());
        match self {
            ExportDtype::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ExportDtype::Bf16 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())),
            ExportDtype::F16 => {
                for &v in values {
                    let h = half::f16::from_f32(v);
                    if v.is_finite() && !h.is_finite() {
                        return Err(Error::Invalid(format!(
                            "tensor {name:?} holds {v}, beyond float16's range; export as bf16 or f32"
                        )));
                    }
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for ExportDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(ExportDtype::F32),
            "bf16" | "bfloat16" => Ok(ExportDtype::Bf16),
            "f16" | "float16" => Ok(ExportDtype::F16),
            other => Err(Error::Invalid(format!(
                "unknown export dtype {other:?} (expected f32, bf16 or f16)"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing files

fn write_json(path: &Path, value: &Value) -> Result<()> {
    files::write_atomic_with(path, |w| {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Invalid(format!("{e}")))?;
        bytes.push(b'\n');
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// A tensor to be written: its values are produced only when its turn comes, so a model is
/// never held twice in memory.
struct Planned<'a> {
    name: String,
    shape: Vec<usize>,
    values: Box<dyn Fn() -> Result<Vec<f32>> + 'a>,
}

/// Writes `tensors` as one safetensors file in `dtype` (with `format: pt` metadata, which
/// transformers checks), streaming tensor after tensor.
fn write_safetensors(path: &Path, tensors: &[Planned<'_>], dtype: ExportDtype) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for t in tensors {
        let n: usize = t.shape.iter().product();
        let end = offset + n * dtype.bytes();
        header.insert(
            t.name.clone(),
            json!({"dtype": dtype.safetensors_name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::Invalid(format!("{e}")))?;
    // The data that follows starts 8-byte aligned (the format pads the header with spaces).
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    files::write_atomic_with(path, |w| {
        let io = |e: std::io::Error| Error::io(path, e);
        w.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&header).map_err(io)?;
        let mut buf = Vec::new();
        for t in tensors {
            let values = (t.values)()?;
            let n: usize = t.shape.iter().product();
            if values.len() != n {
                return Err(Error::Invalid(format!(
                    "tensor {:?} has {} values for shape {:?}",
                    t.name,
                    values.len(),
                    t.shape
                )));
            }
            buf.clear();
            dtype.encode(&t.name, &values, &mut buf)?;
            w.write_all(&buf).map_err(io)?;
        }
        Ok(())
    })
}

/// Writes host tensors `(name, shape, values)` as one f32 safetensors file (checkpoints).
pub(crate) fn write_host_safetensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<()> {
    let planned: Vec<Planned<'_>> = tensors
        .into_iter()
        .map(|(name, shape, values)| Planned {
            name,
            shape,
            values: Box::new(move || Ok(values.clone())),
        })
        .collect();
    write_safetensors(path, &planned, ExportDtype::F32)
}

/// A burn tensor's values on the host.
fn host_values<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.detach()
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Invalid(format!("reading {what}: {e:?}")))
}

// ---------------------------------------------------------------------------------------------
// PEFT adapters

/// `model.layers.{layer}.self_attn.q_proj` etc.
fn module_name(layer: usize, t: LoraTarget) -> String {
    format!("model.layers.{layer}.{}.{}", t.parent(), t.name())
}

/// PEFT's key of one adapter matrix (`which` = `lora_A` / `lora_B`).
fn peft_key(module: &str, which: &str) -> String {
    format!("{PEFT_PREFIX}{module}.{which}.weight")
}

/// `[out, in]` of a target projection.
fn projection_shape(c: &DecoderConfig, t: LoraTarget) -> [usize; 2] {
    let (d, q, kv, i) = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    );
    match t {
        LoraTarget::QProj => [q, d],
        LoraTarget::KProj | LoraTarget::VProj => [kv, d],
        LoraTarget::OProj => [d, q],
        LoraTarget::GateProj | LoraTarget::UpProj => [i, d],
        LoraTarget::DownProj => [d, i],
    }
}

fn linear_of(layer: &crate::models::decoder::model::DecoderLayer, t: LoraTarget) -> &Linear {
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

/// One adapted module's matrices in PEFT's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterPair {
    pub layer: usize,
    pub target: LoraTarget,
    /// `lora_A.weight`, `[r, in]` row-major.
    pub a: Vec<f32>,
    pub a_shape: [usize; 2],
    /// `lora_B.weight`, `[out, r]` row-major.
    pub b: Vec<f32>,
    pub b_shape: [usize; 2],
}

/// A PEFT LoRA adapter read from its directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    pub config: LoraConfig,
    /// `base_model_name_or_path`, when the config names one.
    pub base_model_name: Option<String>,
    /// By module name (`model.layers.0.self_attn.q_proj`).
    pub modules: BTreeMap<String, AdapterPair>,
    /// The directory, for messages.
    pub source: PathBuf,
}

/// Options of a PEFT LoRA config this loader cannot honour, with the values that mean "not
/// used" (peft writes many keys; the rest do not change what the adapter computes).
fn check_unsupported(v: &Value, path: &str) -> Result<()> {
    let is_off = |x: &Value| match x {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    const OFF: &[(&str, &str)] = &[
        ("use_dora", "DoRA adds a magnitude vector per module"),
        ("use_rslora", "rsLoRA scales by alpha / sqrt(r)"),
        ("fan_in_fan_out", "it stores the base weights transposed (GPT-2 Conv1D)"),
        ("lora_bias", "it trains a bias on lora_B"),
        ("modules_to_save", "it saves whole modules beside the adapters"),
        ("rank_pattern", "ranks differ per module"),
        ("alpha_pattern", "alphas differ per module"),
        ("layers_to_transform", "only some layers are adapted"),
        ("layers_pattern", "only some layers are adapted"),
        ("layer_replication", "it duplicates layers"),
        ("exclude_modules", "it excludes modules by pattern"),
        ("target_parameters", "it adapts parameters rather than modules"),
        ("trainable_token_indices", "it trains embedding rows"),
        (
            "alora_invocation_tokens",
            "activated LoRA applies only after invocation tokens",
        ),
        ("use_qalora", "QA-LoRA pools the adapter input"),
    ];
    for (key, why) in OFF {
        if let Some(x) = v.get(*key)
            && !is_off(x)
        {
            return Err(Error::Model {
                path: path.to_string(),
                message: format!("{key} = {x} is not supported ({why}); sealong reads plain LoRA adapters"),
            });
        }
    }
    // These initializations change the base weights too; peft converts such an adapter to a
    // plain one (and writes `true`) only when asked to at save time.
    if let Some(Value::String(init)) = v.get("init_lora_weights")
        && ["pissa", "olora", "corda", "loftq"]
            .iter()
            .any(|p| init.to_lowercase().starts_with(p))
    {
        return Err(Error::Model {
            path: path.to_string(),
            message: format!(
                "init_lora_weights = {init:?} adapts a modified base model; save it converted \
                 (save_pretrained(..., path_initial_model_for_weight_conversion=...)) to use it on the original"
            ),
        });
    }
    match v.get("bias") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(x) => {
            return Err(Error::Model {
                path: path.to_string(),
                message: format!("bias = {x} is not supported (trained base biases); only \"none\" is"),
            });
        }
    }
    Ok(())
}

/// `LoraConfig` and `base_model_name_or_path` from a parsed `adapter_config.json`.
fn lora_config_from_peft(v: &Value, path: &str) -> Result<(LoraConfig, Option<String>)> {
    let err = |m: String| Error::Model {
        path: path.to_string(),
        message: m,
    };
    match v.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        Some(other) => return Err(err(format!("peft_type {other:?} is not supported (LORA is)"))),
        None => return Err(err("no peft_type (expected \"LORA\")".into())),
    }
    match v.get("task_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "CAUSAL_LM" => {}
        Some(x) => return Err(err(format!("task_type {x} is not supported (CAUSAL_LM is)"))),
    }
    check_unsupported(v, path)?;
    // peft's defaults where a key is absent.
    let r = match v.get("r") {
        None => 8,
        Some(x) => x
            .as_u64()
            .filter(|&r| r > 0)
            .ok_or_else(|| err(format!("r = {x} is not a positive integer")))? as usize,
    };
    let alpha = match v.get("lora_alpha") {
        None => 8.0,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| err(format!("lora_alpha = {x} is not a number")))?,
    };
    let dropout = match v.get("lora_dropout") {
        None | Some(Value::Null) => 0.0,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| err(format!("lora_dropout = {x} is not a number")))?,
    };
    let targets = match v.get("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => LoraTarget::ALL.to_vec(),
        Some(Value::String(s)) => {
            return Err(err(format!(
                "target_modules {s:?} is a regular expression; sealong reads a list of module names \
                 (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) or \"all-linear\""
            )));
        }
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for x in list {
                let name = x
                    .as_str()
                    .ok_or_else(|| err(format!("target_modules entry {x} is not a string")))?;
                let t: LoraTarget = name.parse().map_err(|e: Error| err(format!("target_modules: {e}")))?;
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            out
        }
        _ => return Err(err("no target_modules list".into())),
    };
    let config = LoraConfig {
        r,
        alpha,
        dropout,
        targets,
    };
    config.check().map_err(|e| err(e.to_string()))?;
    let base = v
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((config, base))
}

/// `(layer, target, is_b)` of a PEFT adapter key, or `None` for anything else.
fn parse_peft_key(key: &str) -> Option<(usize, LoraTarget, bool)> {
    let rest = key.strip_prefix(PEFT_PREFIX).unwrap_or(key);
    let rest = rest.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (parent, rest) = rest.split_once('.')?;
    let (module, rest) = rest.split_once('.')?;
    let is_b = match rest {
        "lora_A.weight" => false,
        "lora_B.weight" => true,
        _ => return None,
    };
    let target: LoraTarget = module.parse().ok()?;
    (target.parent() == parent).then_some((layer, target, is_b))
}

/// Reads a PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
/// Errors name the file and the key: a missing file, an option sealong does not implement
/// (DoRA, rsLoRA, fan_in_fan_out, per-module ranks, ...), a tensor that is not a LoRA matrix
/// of a decoder projection, a rank other than `r`, a module with only one of its matrices.
/// Shapes against a model are checked when the adapter is used ([`PeftAdapter::apply_to`],
/// [`PeftAdapter::merge_into`]).
pub fn load_peft_adapter(dir: &Path) -> Result<PeftAdapter> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let cfg_label = config_path.display().to_string();
    if !config_path.is_file() {
        return Err(Error::Model {
            path: cfg_label,
            message:
                "missing: not a PEFT adapter directory (expected adapter_config.json and adapter_model.safetensors)"
                    .into(),
        });
    }
    let bytes = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Model {
        path: cfg_label.clone(),
        message: format!("malformed JSON: {e}"),
    })?;
    let (config, base_model_name) = lora_config_from_peft(&v, &cfg_label)?;

    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let label = weights_path.display().to_string();
    if !weights_path.is_file() {
        let message = if dir.join("adapter_model.bin").is_file() {
            "missing; the directory has adapter_model.bin (a pickle), which sealong does not read: \
             save the adapter with safe_serialization=True"
        } else {
            "missing: the adapter directory has no weights"
        };
        return Err(Error::Safetensors {
            path: label,
            message: message.into(),
        });
    }
    let bytes = crate::loading::model_files::map_file(&weights_path)?;
    let err = |m: String| Error::Safetensors {
        path: label.clone(),
        message: m,
    };
    // Per module: lora_A and lora_B (values, shape) as they are found.
    type Half = Option<(Vec<f32>, [usize; 2])>;
    let mut halves: BTreeMap<String, (Half, Half)> = BTreeMap::new();
    let mut where_: BTreeMap<String, (usize, LoraTarget)> = BTreeMap::new();
    let mut tensors = read_dense(&bytes, &label, |_| false)?;
    // By name, so a file with several faults always reports the same one.
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tensors {
        let (layer, target, is_b) = parse_peft_key(&t.name).ok_or_else(|| {
            err(format!(
                "tensor {:?} is not a LoRA matrix of a decoder projection \
                 (base_model.model.model.layers.N.{{self_attn,mlp}}.{{q,k,v,o,gate,up,down}}_proj.lora_{{A,B}}.weight)",
                t.name
            ))
        })?;
        if !config.targets.contains(&target) {
            return Err(err(format!(
                "tensor {:?} adapts {}, which target_modules in {ADAPTER_CONFIG} does not list",
                t.name,
                target.name()
            )));
        }
        let shape: [usize; 2] = t.shape.as_slice().try_into().map_err(|_| {
            err(format!(
                "tensor {:?} has shape {:?}, expected a matrix",
                t.name, t.shape
            ))
        })?;
        let rank = if is_b { shape[1] } else { shape[0] };
        if rank != config.r {
            return Err(err(format!(
                "tensor {:?} has shape {shape:?}: rank {rank}, but {ADAPTER_CONFIG} says r = {}",
                t.name, config.r
            )));
        }
        let module = module_name(layer, target);
        where_.insert(module.clone(), (layer, target));
        let slot = halves.entry(module).or_default();
        let half = if is_b { &mut slot.1 } else { &mut slot.0 };
        if half.replace((t.data, shape)).is_some() {
            return Err(err(format!("tensor {:?} appears twice", t.name)));
        }
    }
    if halves.is_empty() {
        return Err(err("the file holds no adapter tensors".into()));
    }
    let mut modules = BTreeMap::new();
    for (module, (a, b)) in halves {
        let (layer, target) = where_[&module];
        let missing = |which: &str| err(format!("tensor {:?} is missing", peft_key(&module, which)));
        let (a, a_shape) = a.ok_or_else(|| missing("lora_A"))?;
        let (b, b_shape) = b.ok_or_else(|| missing("lora_B"))?;
        modules.insert(
            module,
            AdapterPair {
                layer,
                target,
                a,
                a_shape,
                b,
                b_shape,
            },
        );
    }
    Ok(PeftAdapter {
        config,
        base_model_name,
        modules,
        source: dir.to_path_buf(),
    })
}

impl PeftAdapter {
    fn err(&self, message: String) -> Error {
        Error::Model {
            path: self.source.join(ADAPTER_WEIGHTS).display().to_string(),
            message,
        }
    }

    /// Checks the adapter fits a model of `config`: its layers exist, every matrix has the
    /// shape of the projection it adapts, and every listed target of every layer is there.
    pub fn check_against(&self, config: &DecoderConfig) -> Result<()> {
        let r = self.config.r;
        // In model order, so the first mismatch reported is the first a reader would look at.
        let mut ordered: Vec<(&String, &AdapterPair)> = self.modules.iter().collect();
        ordered.sort_by_key(|(_, p)| (p.layer, LoraTarget::ALL.iter().position(|&t| t == p.target)));
        for (module, p) in ordered {
            if p.layer >= config.num_hidden_layers {
                return Err(self.err(format!(
                    "tensor {:?} is for layer {}, but the model has {} layers (an adapter of another model?)",
                    peft_key(module, "lora_A"),
                    p.layer,
                    config.num_hidden_layers
                )));
            }
            let [out, inp] = projection_shape(config, p.target);
            for (which, got, want) in [("lora_A", p.a_shape, [r, inp]), ("lora_B", p.b_shape, [out, r])] {
                if got != want {
                    return Err(self.err(format!(
                        "tensor {:?} has shape {got:?}, the model needs {want:?} (an adapter of another model?)",
                        peft_key(module, which)
                    )));
                }
            }
        }
        for layer in 0..config.num_hidden_layers {
            for &t in &self.config.targets {
                let module = module_name(layer, t);
                if !self.modules.contains_key(&module) {
                    return Err(self.err(format!(
                        "tensor {:?} is missing (target_modules lists {})",
                        peft_key(&module, "lora_A"),
                        t.name()
                    )));
                }
            }
        }
        Ok(())
    }

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

    /// Attaches the adapters to the CPU engine unmerged (`CpuDecoder::add_lora`), so its
    /// weights stay quantized.
    pub fn attach_to_cpu(&self, engine: &mut CpuDecoder) -> Result<()> {
        self.check_against(&engine.config)?;
        let scaling = self.config.scaling() as f32;
        for p in self.modules.values() {
            engine.add_lora(p.layer, p.target.name(), &p.a, &p.b, self.config.r, scaling)?;
        }
        Ok(())
    }

    /// Merges the adapters into loaded weights (`W += (alpha / r) B A`) before an engine is
    /// built from them. The adapted matrices become f32 (a quantized `W` is dequantized first;
    /// the others keep their format), so on the CPU [`Self::attach_to_cpu`] is the fast way.
    pub fn merge_into(&self, config: &DecoderConfig, weights: &mut DecoderWeights) -> Result<()> {
        self.check_against(config)?;
        let scaling = self.config.scaling() as f32;
        let r = self.config.r;
        for (module, p) in &self.modules {
            let name = format!("{module}.weight");
            let [out, inp] = projection_shape(config, p.target);
            let w = weights.get(&name).ok_or_else(|| Error::Model {
                path: weights.source().to_string(),
                message: format!("tensor {name:?} (adapted by {}) is missing", self.source.display()),
            })?;
            if w.shape != [out, inp] {
                return Err(Error::Model {
                    path: weights.source().to_string(),
                    message: format!("tensor {name:?} has shape {:?}, expected {:?}", w.shape, [out, inp]),
                });
            }
            let mut values = w.to_f32().to_vec();
            let scaled_b: Vec<f32> = p.b.iter().map(|&x| x * scaling).collect();
            let mut delta = vec![0.0f32; out * inp];
            crate::ops::host::gemm_raw(out, inp, r, &mut delta, inp, &scaled_b, r, false, &p.a, inp, false);
            values.iter_mut().zip(&delta).for_each(|(w, d)| *w += d);
            weights.insert(Weight {
                name,
                shape: vec![out, inp],
                data: WeightData::Dense(values.into()),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Merged HF model directory

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

/// The decoder engine of `model` on `device` with `adapter` applied: on the CPU engine the
/// adapters stay beside the quantized weights (two thin products per projection); the burn
/// engine gets them merged into its weights.
pub fn engine_with_adapter(
    model: &ModelPath,
    adapter: &PeftAdapter,
    device: &Device,
    precision: Precision,
) -> Result<Engine> {
    let (config, mut weights) = DecoderWeights::load(model)?;
    // `Engine::from_weights` builds the CPU engine exactly for the host CPU device.
    if !is_host_cpu(device) {
        adapter.merge_into(&config, &mut weights)?;
    }
    let mut engine = Engine::from_weights(config, weights, device, precision)?;
    if let Engine::Cpu(m) = &mut engine {
        adapter.attach_to_cpu(m)?;
    }
    Ok(engine)
}
