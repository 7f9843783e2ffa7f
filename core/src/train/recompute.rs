//! Activation checkpointing per decoder layer for the shared-prompt pair forward: only each
//! layer's input is kept, and each layer is run again, under autodiff, in the backward.
//!
//! One example's step, with `L` layers:
//! 1. A forward through [`Decoder::without_autodiff`] (no graph is recorded, nothing is kept for
//!    a backward), layer by layer, keeping each layer's inputs: the prompt's `[1, P, d]` and the
//!    responses' `[n, R, d]` (`L · (P + nR) · d` floats in all: the floor the issue names).
//! 2. The head under autodiff: the last layer's outputs as leaves, the final norm, the response
//!    positions and the loss; its backward gives the gradient of the last layer's outputs (and
//!    of the head's parameters when they train).
//! 3. For each layer from the top: its saved inputs as leaves, the layer again under autodiff
//!    (the prompt part, then the responses against the prompt's keys and values, exactly as
//!    the forward ran them), and the backward of `Σ outputs ∘ their gradient`. That gives the
//!    layer's parameter gradients (added to the step's accumulator) and the gradient of its
//!    inputs, which is the next layer's output gradient. Only one layer's graph exists at a
//!    time.
//! 4. With full fine-tuning, the embedding lookup the same way.
//!
//! The first `eager_layers` layers can instead run under autodiff in step 1 and keep their whole
//! graph: they are not run again, and one backward through their graph, seeded with the
//! gradient of their output, ends the step. The trainer passes all layers when their graphs fit
//! its `eager_activation_mib` budget (short pairs skip the recomputation) and none otherwise.
//!
//! LoRA dropout masks are keyed by `(seed, example, pass)` and the module name, so the
//! recomputation draws the same masks as the first forward.
//!
//! Why not burn's `BalancedCheckpointing`: it recomputes memory-bound operations and keeps the
//! inputs of every compute-bound one, i.e. of every matrix product: per layer and token that is
//! the normed input, the attention output, the MLP's `[intermediate]` activation and more, several
//! times the one hidden state kept here. Keeping layer inputs only needs the layer boundary,
//! which only the model knows.

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::models::decoder::model::{Decoder, DecoderLayer};
use crate::nn::{KvCache, LinearWeight};
use crate::train::lora::{LoraTarget, target_linear};
use crate::train::loss::{ResponseHidden, gather_response_hidden, response_input_rows};
use crate::train::optim::GradAccumulator;
use crate::train::orpo::OrpoStats;

/// A LoRA dropout key: `(run seed, pass key)`.
type DropoutKey = Option<(u64, u64)>;

/// The loss of the response hidden states and the statistics the trainer logs.
pub type LossFn<'a> = dyn FnMut(&Decoder, ResponseHidden) -> Result<(Tensor<1>, OrpoStats)> + 'a;

/// `layer` with its adapters' dropout keyed by `key` (a cheap clone: tensors share storage).
fn keyed(layer: &DecoderLayer, key: DropoutKey) -> DecoderLayer {
    let mut l = layer.clone();
    for t in LoraTarget::ALL {
        if let Some(a) = target_linear(&mut l, t).lora.as_mut() {
            a.dropout_key = key;
        }
    }
    l
}

/// The layer twice, with the prompt and the response passes' dropout keys (frozen weights stay
/// in their storage format: the shaders' frozen product reads them in both passes).
fn layer_pair(layer: &DecoderLayer, keys: (DropoutKey, DropoutKey)) -> (DecoderLayer, DecoderLayer) {
    (keyed(layer, keys.0), keyed(layer, keys.1))
}

/// One layer over the prompt (`[1, P, d]`) and then over the responses (`[n, R, d]`) against
/// the prompt's keys and values, as the shared-prompt forward runs it.
fn joint_layer(
    decoder: &Decoder,
    (for_prompt, for_responses): (&DecoderLayer, &DecoderLayer),
    xp: Tensor<3>,
    xr: Option<Tensor<3>>,
    n: usize,
) -> (Tensor<3>, Option<Tensor<3>>) {
    let p = xp.dims()[1];
    let mut cache = KvCache::new(1, 1);
    let yp = decoder.layer_forward(for_prompt, xp, &mut cache.layers[0], 0, 0);
    let yr = xr.map(|xr| {
        cache.len = p;
        let mut forked = cache.fork(n);
        decoder.layer_forward(for_responses, xr, &mut forked.layers[0], p, 0)
    });
    (yp, yr)
}

/// The final-normed hidden states predicting each response token, from the last layer's
/// outputs (see [`crate::train::loss::shared_prompt_hidden`]).
fn head_hidden(
    decoder: &Decoder,
    xp: Tensor<3>,
    xr: Option<Tensor<3>>,
    responses: &[&[u32]],
    inputs: usize,
) -> ResponseHidden {
    let [_, p, d] = xp.dims();
    let last = decoder.final_norm(xp.narrow(1, p - 1, 1)).reshape([1, d]);
    let all = match xr {
        Some(xr) => {
            let n = xr.dims()[0];
            Tensor::cat(vec![last, decoder.final_norm(xr).reshape([n * inputs, d])], 0)
        }
        None => last,
    };
    gather_response_hidden(all, responses, inputs)
}

/// `Σ y ∘ g` over the parts that have a gradient (the backward's seed for a layer).
fn surrogate(parts: [(Option<Tensor<3>>, Option<Tensor<3>>); 2]) -> Option<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    for (y, g) in parts {
        if let (Some(y), Some(g)) = (y, g) {
            let term = (y * Tensor::from_inner(g)).sum();
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
    }
    total
}

/// One example's loss and gradients with activation checkpointing per layer (see the module
/// docs): the gradients of `scale · loss` are added to `acc`, and `loss` returns the loss of
/// the response hidden states and the values the trainer logs. The first `eager_layers`
/// layers (and the embedding) keep their whole graph from the first forward, as without
/// checkpointing, and are not run again.
#[allow(clippy::too_many_arguments)]
pub fn shared_prompt_step(
    decoder: &mut Decoder,
    prompt: &[u32],
    responses: &[&[u32]],
    dropout: Option<(u64, u64)>,
    scale: f64,
    eager_layers: usize,
    loss: &mut LossFn<'_>,
    acc: &mut GradAccumulator,
) -> Result<OrpoStats> {
    if prompt.is_empty() || responses.is_empty() || responses.iter().any(|r| r.is_empty()) {
        return Err(Error::Invalid(
            "a shared-prompt batch needs a non-empty prompt and non-empty responses".into(),
        ));
    }
    let n = responses.len();
    let p = prompt.len();
    let inputs = responses.iter().map(|r| r.len() - 1).max().unwrap_or(0);
    let prompt_ids = vec![prompt.to_vec()];
    let rows = response_input_rows(responses, inputs);
    decoder.check_input(&prompt_ids, 0)?;
    if inputs > 0 {
        decoder.check_input(&rows, p)?;
    }
    let keys = (dropout.map(|(s, k)| (s, 2 * k)), dropout.map(|(s, k)| (s, 2 * k + 1)));

    // 1. The eager layers under autodiff (their graph is kept), then the forward outside
    //    autodiff, keeping each remaining layer's inputs.
    let eager = eager_layers.min(decoder.layers.len());
    let plain = decoder.without_autodiff();
    let (mut xp, mut xr, eager_out) = if eager > 0 {
        let mut xp = decoder.embed_ids(&prompt_ids);
        let mut xr = (inputs > 0).then(|| decoder.embed_ids(&rows));
        for layer in &decoder.layers[..eager] {
            let (a, b) = layer_pair(layer, keys);
            (xp, xr) = joint_layer(decoder, (&a, &b), xp, xr, n);
        }
        let plain_out = (xp.clone().inner(), xr.clone().map(Tensor::inner));
        (plain_out.0, plain_out.1, Some((xp, xr)))
    } else {
        (
            plain.embed_ids(&prompt_ids),
            (inputs > 0).then(|| plain.embed_ids(&rows)),
            None,
        )
    };
    let mut saved = Vec::with_capacity(plain.layers.len() - eager);
    for layer in &plain.layers[eager..] {
        saved.push((xp.clone(), xr.clone()));
        let (a, b) = layer_pair(layer, keys);
        (xp, xr) = joint_layer(&plain, (&a, &b), xp, xr, n);
    }
    drop(plain);

    // 2. The head and the loss under autodiff.
    let hp = Tensor::from_inner(xp).require_grad();
    let hr = xr.map(|x| Tensor::from_inner(x).require_grad());
    let rh = head_hidden(decoder, hp.clone(), hr.clone(), responses, inputs);
    let (value, logged) = loss(decoder, rh)?;
    if !logged.loss.is_finite() {
        // The caller reports it; no gradient is added.
        return Ok(logged);
    }
    let mut grads = value.mul_scalar(scale).backward();
    acc.add(decoder, &mut grads);
    let mut gp = hp.grad(&grads);
    let mut gr = hr.as_ref().and_then(|h| h.grad(&grads));
    drop(grads);

    // 3. Each recomputed layer again, from the top.
    for (i, (sp, sr)) in saved.into_iter().enumerate().rev() {
        let xp = Tensor::from_inner(sp).require_grad();
        let xr = sr.map(|x| Tensor::from_inner(x).require_grad());
        let (a, b) = layer_pair(&decoder.layers[eager + i], keys);
        let (yp, yr) = joint_layer(decoder, (&a, &b), xp.clone(), xr.clone(), n);
        let Some(seed) = surrogate([(Some(yp), gp.take()), (yr, gr.take())]) else {
            break;
        };
        let mut grads = seed.backward();
        acc.add(decoder, &mut grads);
        gp = xp.grad(&grads);
        gr = xr.as_ref().and_then(|x| x.grad(&grads));
    }

    // 4. The eager layers' graph (the embedding's too), seeded with their output's gradient.
    if let Some((op, or)) = eager_out {
        if let Some(seed) = surrogate([(Some(op), gp), (or, gr)]) {
            let mut grads = seed.backward();
            acc.add(decoder, &mut grads);
        }
        return Ok(logged);
    }

    // 5. Without eager layers, the embedding table when it trains.
    if matches!(&decoder.embed.table, LinearWeight::Dense(t) if t.is_require_grad()) {
        let ep = decoder.embed_ids(&prompt_ids);
        let er = (inputs > 0).then(|| decoder.embed_ids(&rows));
        if let Some(seed) = surrogate([(Some(ep), gp), (er, gr)]) {
            let mut grads = seed.backward();
            acc.add(decoder, &mut grads);
        }
    }
    Ok(logged)
}
