//! Training checkpoints: everything a killed run needs to continue exactly where it stopped.
//!
//! ```text
//! DIR/checkpoints/step-000012/
//!   trainable.safetensors   the trainable parameters by HF / PEFT name, f32
//!   optimizer.safetensors   `{name}.exp_avg`, `{name}.exp_avg_sq` (flat, f32)
//!   state.json              optimizer step, AdamW update count, the resolved config, data fingerprint
//! ```
//!
//! The schedule, the data order and LoRA dropout are pure functions of (seed, step), so the
//! step number *is* the RNG state and the data position. A checkpoint is written into
//! `step-N.tmp` and renamed into place, so a directory named `step-N` is always complete; a kill
//! mid-write leaves only a `.tmp` that the next run deletes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::models::decoder::Decoder;
use crate::train::lora::{ParamMut, visit_params_mut};
use crate::train::optim::{AdamW, AdamWConfig, Moments, retie_head};

/// `DIR/checkpoints`.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

fn step_dir(out: &Path, step: usize) -> PathBuf {
    checkpoints_dir(out).join(format!("step-{step:06}"))
}

/// Complete checkpoints under `out`, by step, oldest first.
pub fn list(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let dir = checkpoints_dir(out);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok()) {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes `.tmp` leftovers of a write that was killed.
pub fn remove_partial(out: &Path) -> Result<()> {
    let dir = checkpoints_dir(out);
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

fn host(t: Tensor<1>, what: &str) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Invalid(format!("reading {what} back from the device: {e:?}")))
}

/// Shape and values by name.
type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn read_safetensors(path: &Path) -> Result<HostTensors> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let label = path.display().to_string();
    Ok(crate::loading::safetensors::read_dense(&bytes, &label, |_| false)?
        .into_iter()
        .map(|t| (t.name, (t.shape, t.data)))
        .collect())
}

/// Writes a checkpoint of step `step` (optimizer steps done) and returns its directory. `state`
/// is stored as `state.json` with `step` added.
pub fn save(out: &Path, step: usize, decoder: &mut Decoder, optim: &AdamW, mut state: Value) -> Result<PathBuf> {
    let dir = checkpoints_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let final_dir = step_dir(out, step);
    let tmp = dir.join(format!("step-{step:06}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    let mut params = Vec::new();
    let mut failure = None;
    visit_params_mut(decoder, &mut |name, p| {
        let (trainable, shape, flat) = match p {
            ParamMut::Vector(t) => (t.is_require_grad(), t.dims().to_vec(), t.clone().without_autodiff()),
            ParamMut::Matrix(t) => {
                let dims = t.dims();
                (
                    t.is_require_grad(),
                    dims.to_vec(),
                    t.clone().without_autodiff().reshape([dims[0] * dims[1]]),
                )
            }
        };
        if trainable {
            match host(flat, name) {
                Ok(v) => params.push((name.to_string(), shape, v)),
                Err(e) => failure = Some(e),
            }
        }
    });
    retie_head(decoder);
    if let Some(e) = failure {
        return Err(e);
    }
    crate::loading::safetensors::write_host_safetensors(&tmp.join("trainable.safetensors"), params)?;

    let mut moments = Vec::new();
    for (name, m) in &optim.moments {
        let n = m.m.dims()[0];
        moments.push((format!("{name}.exp_avg"), vec![n], host(m.m.clone(), name)?));
        moments.push((format!("{name}.exp_avg_sq"), vec![n], host(m.v.clone(), name)?));
    }
    crate::loading::safetensors::write_host_safetensors(&tmp.join("optimizer.safetensors"), moments)?;

    if let Value::Object(map) = &mut state {
        map.insert("step".into(), step.into());
        map.insert("adam_steps".into(), optim.steps.into());
        map.insert("adam".into(), serde_json::to_value(optim.config).unwrap_or(Value::Null));
    }
    let state_path = tmp.join("state.json");
    let text = serde_json::to_string_pretty(&state).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::files::write_atomic(&state_path, text.as_bytes())?;

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    // The rename is what makes the checkpoint exist; make it survive a power cut too.
    crate::files::sync_dir(&dir)?;
    Ok(final_dir)
}

/// Deletes all but the newest `keep` checkpoints (`keep` 0 keeps all).
pub fn prune(out: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(out)?;
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// A checkpoint read back.
pub struct Loaded {
    pub step: usize,
    pub state: Value,
    pub dir: PathBuf,
}

/// Loads the checkpoint in `dir` into `decoder` (its trainable parameters, which must be exactly
/// the checkpoint's) and returns the optimizer and the state. Errors name the file and tensor.
pub fn load(dir: &Path, decoder: &mut Decoder) -> Result<(AdamW, Loaded)> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: Value = serde_json::from_str(&text).map_err(|e| Error::Model {
        path: state_path.display().to_string(),
        message: format!("malformed JSON: {e}"),
    })?;
    let field = |k: &str| {
        state.get(k).and_then(Value::as_u64).ok_or_else(|| Error::Model {
            path: state_path.display().to_string(),
            message: format!("no {k:?} number"),
        })
    };
    let step = field("step")? as usize;
    let adam_steps = field("adam_steps")?;
    let adam: AdamWConfig = state
        .get("adam")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();

    let params_path = dir.join("trainable.safetensors");
    let mut params = read_safetensors(&params_path)?;
    let label = params_path.display().to_string();
    let device = decoder.device.clone();
    let mut problems = Vec::new();
    visit_params_mut(decoder, &mut |name, p| {
        let trainable = match &p {
            ParamMut::Vector(t) => t.is_require_grad(),
            ParamMut::Matrix(t) => t.is_require_grad(),
        };
        if !trainable {
            return;
        }
        let Some((shape, values)) = params.remove(name) else {
            problems.push(format!("no tensor {name:?}"));
            return;
        };
        match p {
            ParamMut::Vector(t) if shape == t.dims() => {
                *t = Tensor::<1>::from_data(TensorData::new(values, [shape[0]]), &device).require_grad();
            }
            ParamMut::Matrix(t) if shape == t.dims() => {
                *t = Tensor::<2>::from_data(TensorData::new(values, [shape[0], shape[1]]), &device).require_grad();
            }
            ParamMut::Vector(t) => problems.push(format!("{name:?} has shape {shape:?}, the model {:?}", t.dims())),
            ParamMut::Matrix(t) => problems.push(format!("{name:?} has shape {shape:?}, the model {:?}", t.dims())),
        }
    });
    retie_head(decoder);
    problems.extend(
        params
            .keys()
            .map(|k| format!("{k:?} is not a trainable parameter of this run")),
    );
    if !problems.is_empty() {
        return Err(Error::Safetensors {
            path: label,
            message: format!("the checkpoint does not fit the model: {}", problems.join("; ")),
        });
    }

    let opt_path = dir.join("optimizer.safetensors");
    let mut raw = read_safetensors(&opt_path)?;
    let inner = device.clone().without_autodiff();
    let names: Vec<String> = raw
        .keys()
        .filter_map(|k| k.strip_suffix(".exp_avg").map(str::to_string))
        .collect();
    let mut optim = AdamW::new(adam);
    optim.steps = adam_steps;
    for name in names {
        let m = raw.remove(&format!("{name}.exp_avg"));
        let v = raw.remove(&format!("{name}.exp_avg_sq"));
        let (Some((ms, m)), Some((vs, v))) = (m, v) else {
            return Err(Error::Safetensors {
                path: opt_path.display().to_string(),
                message: format!("{name:?} lacks exp_avg or exp_avg_sq"),
            });
        };
        optim.moments.insert(
            name,
            Moments {
                m: Tensor::<1>::from_data(TensorData::new(m, [ms.iter().product::<usize>()]), &inner),
                v: Tensor::<1>::from_data(TensorData::new(v, [vs.iter().product::<usize>()]), &inner),
            },
        );
    }
    if let Some(k) = raw.keys().next() {
        return Err(Error::Safetensors {
            path: opt_path.display().to_string(),
            message: format!("unexpected tensor {k:?}"),
        });
    }
    Ok((
        optim,
        Loaded {
            step,
            state,
            dir: dir.to_path_buf(),
        },
    ))
}
