//! AdamW with global-norm gradient clipping over the decoder's named trainable parameters,
//! in PyTorch's exact update order (`torch.optim.AdamW`, `clip_grad_norm_`), and gradient
//! accumulation across micro-batches.
//!
//! The moments and accumulated gradients live on the training device without autodiff
//! (`Tensor::without_autodiff`), flattened to one dimension: the update is element-wise, and a
//! flat layout makes the checkpoint format independent of parameter rank.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::Gradients;

use crate::error::{Error, Result};
use crate::models::decoder::Decoder;
use crate::train::lora::{ParamMut, visit_params_mut};

/// AdamW's hyper-parameters (SEALONG's recipe: betas (0.9, 0.999), weight decay 0.1, eps 1e-8).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// One parameter's moments.
#[derive(Debug, Clone)]
pub struct Moments {
    /// `exp_avg`, `[numel]`.
    pub m: Tensor<1>,
    /// `exp_avg_sq`, `[numel]`.
    pub v: Tensor<1>,
}

/// AdamW's state: the moments by parameter name and the number of updates done.
#[derive(Debug, Clone, Default)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub moments: BTreeMap<String, Moments>,
    /// Updates applied so far (PyTorch's per-parameter `step`, the same for all here).
    pub steps: u64,
}

fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

/// Gradients summed over the micro-batches of one optimizer step.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    sums: BTreeMap<String, Tensor<1>>,
}

impl GradAccumulator {
    /// Adds the gradients of every trainable parameter of `decoder` found in `grads`.
    pub fn add(&mut self, decoder: &mut Decoder, grads: &mut Gradients) {
        let sums = &mut self.sums;
        visit_params_mut(decoder, &mut |name, p| {
            let g = match p {
                ParamMut::Vector(t) => t.grad_remove(grads).map(flat),
                ParamMut::Matrix(t) => t.grad_remove(grads).map(flat),
            };
            if let Some(g) = g {
                let g = match sums.remove(name) {
                    Some(acc) => acc + g,
                    None => g,
                };
                sums.insert(name.to_string(), g);
            }
        });
    }

    /// Whether no gradient was added.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The global L2 norm of the accumulated gradients (one read from the device), in f64.
    pub fn global_norm(&self) -> Result<f64> {
        let mut total: Option<Tensor<1>> = None;
        for g in self.sums.values() {
            let sq = g.clone().powi_scalar(2).sum();
            total = Some(match total {
                Some(t) => t + sq,
                None => sq,
            });
        }
        let Some(total) = total else { return Ok(0.0) };
        let v = total
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Invalid(format!("reading the gradient norm back: {e:?}")))?;
        Ok(f64::from(v[0]).sqrt())
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) {
        for g in self.sums.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    /// The accumulated gradients by name (consumed by the optimizer).
    pub fn take(&mut self) -> BTreeMap<String, Tensor<1>> {
        std::mem::take(&mut self.sums)
    }
}

/// `clip_grad_norm_`'s factor: `max_norm / (norm + 1e-6)` when that is below 1, else 1.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    let f = max_norm / (norm + 1e-6);
    if f < 1.0 { f } else { 1.0 }
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            moments: BTreeMap::new(),
            steps: 0,
        }
    }

    /// One AdamW update with learning rate `lr` of every trainable parameter of `decoder` that has
    /// a gradient in `grads` (a parameter without one is left alone, as PyTorch skips
    /// `grad is None`). The updated parameters are fresh autodiff leaves that require a gradient.
    pub fn step(&mut self, decoder: &mut Decoder, grads: BTreeMap<String, Tensor<1>>, lr: f64) -> Result<()> {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let moments = &mut self.moments;
        let mut missing = Vec::new();
        let mut update = |name: &str, p: Tensor<1>| -> Option<Tensor<1>> {
            let g = grads.get(name)?.clone();
            let Moments { m, v } = moments.remove(name).unwrap_or_else(|| Moments {
                m: g.zeros_like(),
                v: g.zeros_like(),
            });
            if m.dims() != g.dims() {
                missing.push(format!(
                    "{name}: state has {:?} values, gradient {:?}",
                    m.dims(),
                    g.dims()
                ));
                return None;
            }
            let p = p.mul_scalar(1.0 - lr * c.weight_decay);
            let m = m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
            let v = v.mul_scalar(c.beta2) + g.powi_scalar(2).mul_scalar(1.0 - c.beta2);
            let denom = v.clone().sqrt().div_scalar(bc2_sqrt).add_scalar(c.eps);
            let p = p - m.clone().div(denom).mul_scalar(step_size);
            moments.insert(name.to_string(), Moments { m, v });
            Some(p)
        };
        visit_params_mut(decoder, &mut |name, param| match param {
            ParamMut::Vector(t) => {
                let dims = t.dims();
                if let Some(new) = update(name, flat(t.clone().without_autodiff())) {
                    *t = new.reshape(dims).autodiff().require_grad();
                }
            }
            ParamMut::Matrix(t) => {
                let dims = t.dims();
                if let Some(new) = update(name, flat(t.clone().without_autodiff())) {
                    *t = new.reshape(dims).autodiff().require_grad();
                }
            }
        });
        retie_head(decoder);
        if !missing.is_empty() {
            return Err(Error::Invalid(format!(
                "optimizer state does not match the parameters: {}",
                missing.join("; ")
            )));
        }
        Ok(())
    }
}

/// A tied output head is the embedding matrix: point it at the updated table.
pub fn retie_head(decoder: &mut Decoder) {
    if decoder.config.tie_word_embeddings
        && let crate::nn::LinearWeight::Dense(t) = &decoder.embed.table
    {
        decoder.lm_head.weight = crate::nn::LinearWeight::Dense(t.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's AdamW on one scalar, written out by hand (two steps, wd 0.1).
    #[test]
    fn clip_factor_matches_torch() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        let f = clip_factor(4.0, 1.0);
        assert!((f - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
    }
}
