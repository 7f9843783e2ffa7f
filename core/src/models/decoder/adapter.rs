//! LoRA adapters of the decoder: what one is ([`LoraTarget`], [`LoraConfig`]), a PEFT adapter
//! directory read back ([`load_peft_adapter`], checked against a model), and the engine with an
//! adapter ([`engine_with_adapter`]): on the CPU engine the adapters stay beside the quantized
//! weights as two thin products per projection (merging would turn a Q4 matrix into f32 and
//! halve decode speed); other engines get them merged into the loaded weights. Decoding with an
//! adapter needs nothing from `train`, which trains adapters, writes them (PEFT's layout, the
//! names below) and puts them on the burn decoder to continue training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;

use super::weights::DecoderWeights;
use super::{CpuDecoder, DecoderConfig, Engine};
use crate::error::{Error, Result};
use crate::loading::ModelPath;
use crate::loading::safetensors::read_dense;
use crate::loading::weight::{Weight, WeightData};
use crate::nn::linear::{Precision, is_host_cpu};

/// A module LoRA can adapt (PEFT's `target_modules` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// PEFT's module name (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
        }
    }

    /// `self_attn` or `mlp`.
    pub fn parent(self) -> &'static str {
        match self {
            LoraTarget::QProj | LoraTarget::KProj | LoraTarget::VProj | LoraTarget::OProj => "self_attn",
            _ => "mlp",
        }
    }
}

impl std::str::FromStr for LoraTarget {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        LoraTarget::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown LoRA target {s:?} (expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
                ))
            })
    }
}

/// LoRA hyper-parameters (defaults: the paper's r = 128, alpha = 128, dropout 0.05 on all seven
/// projections).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 128,
            alpha: 128.0,
            dropout: 0.05,
            targets: LoraTarget::ALL.to_vec(),
        }
    }
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.r as f64
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::Invalid("LoRA rank must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Invalid(format!(
                "LoRA dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::Invalid("LoRA needs at least one target module".into()));
        }
        Ok(())
    }
}

/// PEFT's adapter config file name.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's adapter weights file name (safetensors serialization, peft's default).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What `PeftModelForCausalLM.state_dict()` puts before the base model's own names.
const PEFT_PREFIX: &str = "base_model.model.";

// ---------------------------------------------------------------------------------------------
// PEFT adapters

/// `model.layers.{layer}.self_attn.q_proj` etc.
pub(crate) fn module_name(layer: usize, t: LoraTarget) -> String {
    format!("model.layers.{layer}.{}.{}", t.parent(), t.name())
}

/// PEFT's key of one adapter matrix (`which` = `lora_A` / `lora_B`).
pub(crate) fn peft_key(module: &str, which: &str) -> String {
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
