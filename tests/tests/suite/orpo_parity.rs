//! Training losses against the reference (tests/golden/orpo.json, orpo_grads.safetensors:
//! transformers on the GGUF dequantized to f32): prompt/response masking (ids exact), per-token
//! log-probs, lp_w, lp_l, NLL, log odds, ORPO and SFT losses (relative 1e-4), and the gradients
//! of both losses w.r.t. `model.norm.weight` and layer 0's `q_proj.weight` (relative 1e-3 in
//! L2), computed on the CPU backend under autodiff with exactly those two parameters trainable.
//! Plus LoRA on tiny random models: a zero `B` leaves the model unchanged, one SGD step lowers
//! the loss, dropout is reproducible, full fine-tuning reaches every weight.

use std::time::Instant;

use burn::prelude::*;
use sealong::loading::{ModelPath, TextAssets};
use sealong::models::decoder::Decoder;
use sealong::nn::LinearWeight;
use sealong::train::lora::{ParamMut, gradients, set_lora_dropout, visit_params_mut};
use sealong::train::{
    LoraConfig, LoraTarget, Tokenized, TokenizedPair, TrainMode, apply_lora, merge_lora, prepare_training,
    set_trainable, tokenize_pair,
};
use sealong_tests::eager::{label_logprobs, orpo_loss, pair_logps, response_hidden, response_logps, sft_loss};
use sealong_tests::tiny::{self, TinySpec};
use sealong_tests::{golden_dir, golden_json, ids, s, smollm_path};
use serde_json::Value;

/// Relative tolerance of the scalar quantities.
const SCALAR_REL_TOL: f64 = 1e-4;
/// Relative L2 tolerance of the gradients.
const GRAD_REL_TOL: f64 = 1e-3;
const NORM: &str = "model.norm.weight";
const Q_PROJ: &str = "model.layers.0.self_attn.q_proj.weight";

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("golden field {key:?} is not a number"))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_data().try_into_vec_as::<f32>().expect("read")[0] as f64
}

fn vec_of(t: &Tensor<1>) -> Vec<f32> {
    t.clone().into_data().try_into_vec_as::<f32>().expect("read")
}

fn rel_l2(g: &[f32], r: &[f32]) -> f64 {
    assert_eq!(g.len(), r.len(), "gradient sizes differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in g.iter().zip(r) {
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    (num / den).sqrt()
}

fn golden_pairs(assets: &TextAssets, golden: &Value) -> Vec<(Value, TokenizedPair)> {
    golden["triples"]
        .as_array()
        .expect("triples")
        .iter()
        .map(|t| {
            let pair = tokenize_pair(assets, s(t, "user_message"), s(t, "chosen"), s(t, "rejected")).expect("tokenize");
            (t.clone(), pair)
        })
        .collect()
}

#[test]
fn masking_ids_match_golden() {
    let path = ModelPath::detect(&smollm_path()).expect("detect");
    let assets = TextAssets::load(&path).expect("assets");
    let golden = golden_json("orpo.json");
    for (k, (t, pair)) in golden_pairs(&assets, &golden).into_iter().enumerate() {
        assert_eq!(pair.prompt_ids, ids(&t, "prompt_ids"), "triple {k}: prompt ids");
        assert_eq!(pair.chosen.ids, ids(&t, "chosen_full_ids"), "triple {k}: chosen ids");
        assert_eq!(
            pair.rejected.ids,
            ids(&t, "rejected_full_ids"),
            "triple {k}: rejected ids"
        );
        assert_eq!(pair.chosen.n_prompt, f(&t, "n_prompt_tokens") as usize, "triple {k}");
        assert_eq!(
            pair.chosen.n_response(),
            f(&t, "n_response_tokens_chosen") as usize,
            "triple {k}"
        );
        assert_eq!(
            pair.rejected.n_response(),
            f(&t, "n_response_tokens_rejected") as usize,
            "triple {k}"
        );
        let labels = pair.chosen.labels();
        assert!(labels[..pair.chosen.n_prompt].iter().all(|&l| l == -100));
        assert!(
            labels[pair.chosen.n_prompt..]
                .iter()
                .zip(pair.chosen.response_ids())
                .all(|(&l, &id)| l == i64::from(id))
        );
    }
}

#[test]
fn orpo_losses_and_gradients_match_golden() {
    let start = Instant::now();
    let path = ModelPath::detect(&smollm_path()).expect("detect");
    let assets = TextAssets::load(&path).expect("assets");
    let golden = golden_json("orpo.json");
    let beta = golden["beta"].as_f64().expect("beta");
    let grad_bytes = std::fs::read(golden_dir().join("orpo_grads.safetensors")).expect("grads file");
    let grad_file = safetensors::SafeTensors::deserialize(&grad_bytes).expect("safetensors");
    let reference = |name: &str| -> Vec<f32> {
        let view = grad_file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };

    let device = Device::flex().autodiff();
    let mut model = Decoder::load(&path, &device).expect("load SmolLM2 dense on autodiff");
    let trainable = set_trainable(&mut model, &|n| n == NORM || n == Q_PROJ).expect("trainable");
    assert_eq!(trainable, vec![Q_PROJ.to_string(), NORM.to_string()]);
    eprintln!("load: {:.1}s", start.elapsed().as_secs_f64());

    let mut worst_scalar = std::collections::BTreeMap::<&str, f64>::new();
    let mut worst_token = 0.0f64;
    let mut worst_grad = std::collections::BTreeMap::<String, f64>::new();
    for (k, (t, pair)) in golden_pairs(&assets, &golden).into_iter().enumerate() {
        let tk = Instant::now();
        let (chosen, rejected) = pair_logps(&model, std::slice::from_ref(&pair)).expect("forward");
        for (got, key) in [(&chosen, "chosen_token_logps"), (&rejected, "rejected_token_logps")] {
            let want: Vec<f64> = t[key]
                .as_array()
                .expect(key)
                .iter()
                .map(|x| x.as_f64().expect("log-prob"))
                .collect();
            let have = vec_of(&got.token_logps);
            assert_eq!(have.len(), want.len(), "triple {k}: {key} length");
            for (a, b) in have.iter().zip(&want) {
                worst_token = worst_token.max((*a as f64 - b).abs());
            }
        }
        let orpo = orpo_loss(&chosen, &rejected, beta).expect("orpo");
        let metrics = orpo.metrics().expect("metrics");
        let checks = [
            ("lp_w", metrics.lp_w[0] as f64),
            ("lp_l", metrics.lp_l[0] as f64),
            ("nll_w", metrics.nll_w as f64),
            ("log_odds", metrics.log_odds[0] as f64),
            ("log_sigmoid", metrics.log_sigmoid[0] as f64),
            ("loss", metrics.loss as f64),
            ("chosen_reward", metrics.chosen_reward as f64),
            ("rejected_reward", metrics.rejected_reward as f64),
            ("reward_margin", metrics.reward_margin as f64),
        ];
        for (key, have) in checks {
            let e = rel(have, f(&t, key));
            eprintln!("triple {k} {key}: {have} vs {} (rel {e:.2e})", f(&t, key));
            assert!(
                e <= SCALAR_REL_TOL,
                "triple {k}: {key} {have} vs {} (rel {e:.2e})",
                f(&t, key)
            );
            let w = worst_scalar.entry(key).or_insert(0.0);
            *w = w.max(e);
        }
        assert_eq!(
            metrics.reward_accuracy as f64,
            f(&t, "reward_accuracy"),
            "triple {k}: reward accuracy"
        );
        let grads = orpo.loss.backward();
        let loss_grads = gradients(&mut model, &grads);

        // SFT: its own forward (backward consumes the graph).
        let chosen_only = response_logps(&model, &[&pair.chosen]).expect("forward");
        let sft = sft_loss(&chosen_only);
        let e = rel(scalar(&sft), f(&t, "sft_loss"));
        assert!(e <= SCALAR_REL_TOL, "triple {k}: sft_loss rel {e:.2e}");
        let w = worst_scalar.entry("sft_loss").or_insert(0.0);
        *w = w.max(e);
        let sft_grads = gradients(&mut model, &sft.backward());

        for (which, got) in [("loss", &loss_grads), ("sft", &sft_grads)] {
            assert_eq!(
                got.len(),
                2,
                "triple {k}: gradients of {which} for exactly the two trainable parameters"
            );
            for (name, data) in got {
                let have = data.clone().try_into_vec::<f32>().expect("f32 gradient");
                let want = reference(&format!("orpo_{k:02}.grad_{which}.{name}"));
                let e = rel_l2(&have, &want);
                eprintln!("triple {k} d{which}/d{name}: rel L2 {e:.2e}");
                assert!(e <= GRAD_REL_TOL, "triple {k}: d{which}/d{name} rel L2 {e:.2e}");
                let w = worst_grad.entry(format!("d{which}/d{name}")).or_insert(0.0);
                *w = w.max(e);
            }
        }
        eprintln!(
            "triple {k}: {} + {} tokens, {:.1}s",
            pair.chosen.ids.len(),
            pair.rejected.ids.len(),
            tk.elapsed().as_secs_f64()
        );
    }
    eprintln!("worst relative errors: {worst_scalar:?}");
    eprintln!("worst per-token log-prob |d|: {worst_token:.2e}");
    eprintln!("worst gradient relative L2: {worst_grad:?}");
    eprintln!("total {:.1}s", start.elapsed().as_secs_f64());
}

fn tiny_spec() -> TinySpec {
    TinySpec::small()
}

fn tiny_model(device: &Device) -> (tempfile::TempDir, Decoder) {
    let spec = tiny_spec();
    let dir = tempfile::tempdir().expect("tempdir");
    tiny::write_hf_dir(dir.path(), &spec, &tiny::random_weights(&spec, 7));
    let model = Decoder::load(&ModelPath::detect(dir.path()).expect("detect"), device).expect("load tiny");
    (dir, model)
}

fn tiny_pair() -> TokenizedPair {
    let prompt: Vec<u32> = (0..9).map(|i| (i * 13 + 3) % 64).collect();
    let mut chosen = prompt.clone();
    chosen.extend([5, 17, 40, 2]);
    let mut rejected = prompt.clone();
    rejected.extend([33, 8, 60, 61, 12, 2]);
    TokenizedPair {
        chosen: Tokenized::new(chosen, prompt.len()).expect("chosen"),
        rejected: Tokenized::new(rejected, prompt.len()).expect("rejected"),
        prompt_ids: prompt,
    }
}

fn all_logits(model: &Decoder, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(1);
    model
        .forward_all(&[ids.to_vec()], &mut cache)
        .expect("forward")
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("read")
}

fn tiny_lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
    }
}

#[test]
fn lora_with_zero_b_equals_base() {
    let device = Device::flex().autodiff();
    let (_dir, mut model) = tiny_model(&device);
    let ids = tiny_pair().rejected.ids;
    let base = all_logits(&model, &ids);
    apply_lora(&mut model, &tiny_lora(), 1).expect("lora");
    assert!(model.layers[0].q_proj.lora.is_some() && model.layers[1].down_proj.lora.is_some());
    let adapted = all_logits(&model, &ids);
    assert_eq!(base, adapted, "B = 0 must leave the logits bit-identical");
    // Without autodiff too (burn inference path).
    let (_dir2, mut plain) = tiny_model(&Device::flex());
    let base = all_logits(&plain, &ids);
    apply_lora(&mut plain, &tiny_lora(), 1).expect("lora");
    assert_eq!(base, all_logits(&plain, &ids));
}

fn orpo_value(model: &Decoder, pair: &TokenizedPair) -> (Tensor<1>, f32) {
    let (c, r) = pair_logps(model, std::slice::from_ref(pair)).expect("forward");
    let l = orpo_loss(&c, &r, 0.1).expect("orpo").loss;
    let v = scalar(&l) as f32;
    (l, v)
}

/// `p -= lr * grad` for every parameter that has a gradient; returns how many were updated.
fn sgd_step(model: &mut Decoder, grads: &burn::tensor::Gradients, lr: f32) -> usize {
    let mut updated = 0;
    fn step<const D: usize>(t: &mut Tensor<D>, grads: &burn::tensor::Gradients, lr: f32) -> bool {
        let Some(g) = t.grad(grads) else { return false };
        let shape = t.dims();
        let device = t.device();
        let v = t.clone().into_data().try_into_vec_as::<f32>().expect("read");
        let g = g.into_data().try_into_vec_as::<f32>().expect("read");
        let new: Vec<f32> = v.iter().zip(&g).map(|(a, b)| a - lr * b).collect();
        *t = Tensor::<D>::from_data(TensorData::new(new, shape), &device).require_grad();
        true
    }
    visit_params_mut(model, &mut |_, p| {
        let did = match p {
            ParamMut::Vector(t) => step(t, grads, lr),
            ParamMut::Matrix(t) => step(t, grads, lr),
        };
        updated += usize::from(did);
    });
    updated
}

#[test]
fn lora_sgd_step_lowers_the_loss() {
    let device = Device::flex().autodiff();
    let (_dir, mut model) = tiny_model(&device);
    let trainable = prepare_training(&mut model, &TrainMode::Lora(tiny_lora()), 3).expect("prepare");
    assert_eq!(trainable.len(), 2 * 7 * 2, "A and B of 7 targets in 2 layers");
    assert!(trainable.iter().all(|n| n.contains(".lora_")));
    let pair = tiny_pair();
    let (loss, before) = orpo_value(&model, &pair);
    let grads = loss.backward();
    let got = gradients(&mut model, &grads);
    // With B = 0 only B gets a non-zero gradient; the frozen base gets none at all.
    assert_eq!(got.len(), trainable.len());
    let updated = sgd_step(&mut model, &grads, 0.05);
    assert_eq!(updated, trainable.len());
    let (_, after) = orpo_value(&model, &pair);
    eprintln!("ORPO loss before {before}, after one SGD step {after}");
    assert!(after < before, "loss did not go down: {before} -> {after}");

    // A second step moves A too and keeps lowering the loss.
    let (loss, _) = orpo_value(&model, &pair);
    sgd_step(&mut model, &loss.backward(), 0.05);
    let (_, third) = orpo_value(&model, &pair);
    assert!(third < after, "second step: {after} -> {third}");

    // Merging folds the trained adapters into the base: same logits, no adapters left.
    let ids = pair.rejected.ids.clone();
    let adapted = all_logits(&model, &ids);
    merge_lora(&mut model).expect("merge");
    assert!(
        model
            .layers
            .iter()
            .all(|l| l.q_proj.lora.is_none() && l.down_proj.lora.is_none())
    );
    let merged = all_logits(&model, &ids);
    let worst = adapted
        .iter()
        .zip(&merged)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("merged vs adapted logits: max |d| {worst:.2e}");
    assert!(worst <= 1e-5, "merged logits differ by {worst}");
}

#[test]
fn label_logprobs_twin_matches_output_head() {
    let device = Device::flex().autodiff();
    let (_dir, model) = tiny_model(&device);
    let pair = tiny_pair();
    let rows = [&pair.chosen, &pair.rejected];
    let via_head = vec_of(&response_logps(&model, &rows).expect("forward").token_logps);
    let rh = response_hidden(&model, &rows).expect("forward");
    assert_eq!(rh.counts, vec![pair.chosen.n_response(), pair.rejected.n_response()]);
    let LinearWeight::Dense(w) = &model.lm_head.weight else {
        panic!("dense head expected on an autodiff device")
    };
    let twin = vec_of(&label_logprobs(rh.hidden, w.clone(), &rh.labels).expect("twin"));
    assert_eq!(via_head.len(), twin.len());
    let worst = via_head
        .iter()
        .zip(&twin)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "twin differs by {worst}");
    assert!(label_logprobs(Tensor::zeros([2, 32], &device), w.clone(), &[1]).is_err());
    assert!(label_logprobs(Tensor::zeros([1, 32], &device), w.clone(), &[64]).is_err());
}

#[test]
fn lora_dropout_is_seeded() {
    let device = Device::flex().autodiff();
    let (_dir, mut model) = tiny_model(&device);
    let cfg = LoraConfig {
        dropout: 0.3,
        ..tiny_lora()
    };
    prepare_training(&mut model, &TrainMode::Lora(cfg), 3).expect("prepare");
    let pair = tiny_pair();
    // Make B non-zero so dropout shows.
    let (loss, _) = orpo_value(&model, &pair);
    sgd_step(&mut model, &loss.backward(), 0.5);
    let (_, no_dropout) = orpo_value(&model, &pair);
    set_lora_dropout(&mut model, Some((11, 0)));
    let (_, a) = orpo_value(&model, &pair);
    let (_, b) = orpo_value(&model, &pair);
    set_lora_dropout(&mut model, Some((11, 1)));
    let (_, c) = orpo_value(&model, &pair);
    assert_eq!(a, b, "same (seed, step), same masks");
    assert_ne!(a, no_dropout);
    assert_ne!(a, c, "another step draws other masks");
}

#[test]
fn full_fine_tuning_reaches_every_weight() {
    let device = Device::flex().autodiff();
    let (_dir, mut model) = tiny_model(&device);
    let trainable = prepare_training(&mut model, &TrainMode::Full, 0).expect("prepare");
    // embed (tied head), 2 norms + 7 projections per layer, final norm.
    assert_eq!(trainable.len(), 1 + 2 * 9 + 1);
    let pair = tiny_pair();
    let (c, _) = pair_logps(&model, std::slice::from_ref(&pair)).expect("forward");
    let sft = sft_loss(&c);
    let before = scalar(&sft);
    let grads = sft.backward();
    assert_eq!(gradients(&mut model, &grads).len(), trainable.len());
    sgd_step(&mut model, &grads, 0.05);
    let (c, _) = pair_logps(&model, std::slice::from_ref(&pair)).expect("forward");
    let after = scalar(&sft_loss(&c));
    assert!(after < before, "SFT loss did not go down: {before} -> {after}");
}
