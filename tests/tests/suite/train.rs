//! The trainer (core/src/train/{trainer,optim,checkpoint,schedule}.rs) on tiny random models and
//! on the default SmolLM2 through `sealong train`:
//! - the shared-prompt forward gives the same per-token log-probs and gradients as running each
//!   full sequence (the eager path the golden parity test checks);
//! - one AdamW step equals PyTorch's formulas computed on the host in f64;
//! - micro-batching does not change the update;
//! - overfitting a handful of pairs drives the ORPO loss down and reward accuracy to 1;
//! - a run stopped after a checkpoint and resumed ends with bit-identical weights and metrics to
//!   an uninterrupted run (LoRA dropout on, so the dropout keys are covered too);
//! - a diverging run stops on the non-finite loss and leaves its last good checkpoint loadable;
//! - the CLI: recipe TOML and flags, outputs (metrics, adapter, merged model), refusing to
//!   overwrite a run, resuming after a real SIGKILL to the same adapter bytes, bad input.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use sealong::loading::ModelPath;
use sealong::models::decoder::Decoder;
use sealong::train::lora::{ParamMut, visit_params_mut};
use sealong::train::loss::shared_prompt_hidden;
use sealong::train::optim::{AdamW, AdamWConfig, GradAccumulator};
use sealong::train::{
    Example, LoraConfig, LoraTarget, Method, Tokenized, TrainConfig, TrainMode, Trainer, prepare_training,
};
use sealong_tests::eager::response_logps;
use sealong_tests::tiny::{self, TinySpec};

fn tiny_spec() -> TinySpec {
    TinySpec {
        qkv_bias: true,
        tied: false,
        ..TinySpec::small()
    }
}

fn tiny_dir() -> tempfile::TempDir {
    let spec = tiny_spec();
    let dir = tempfile::tempdir().expect("tempdir");
    tiny::write_hf_dir(dir.path(), &spec, &tiny::random_weights(&spec, 11));
    dir
}

fn load(dir: &Path) -> Decoder {
    let device = Device::flex().autodiff();
    Decoder::load(&ModelPath::detect(dir).expect("detect"), &device).expect("load tiny")
}

/// Pairs of the tiny vocabulary: a prompt of 6-11 ids, responses of 2-6 ids.
fn examples(n: usize) -> Vec<Example> {
    (0..n)
        .map(|k| {
            let p = 6 + k % 6;
            let prompt: Vec<u32> = (0..p).map(|i| ((i * 7 + k * 5 + 1) % 60) as u32).collect();
            let chosen: Vec<u32> = (0..2 + k % 3).map(|i| ((k * 3 + i * 11 + 2) % 60) as u32).collect();
            let rejected: Vec<u32> = (0..3 + k % 4).map(|i| ((k * 13 + i * 5 + 9) % 60) as u32).collect();
            Example {
                id: format!("ex{k}"),
                prompt,
                chosen,
                rejected: Some(rejected),
                truncated: false,
            }
        })
        .collect()
}

fn lora(dropout: f64) -> TrainMode {
    TrainMode::Lora(LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout,
        targets: LoraTarget::ALL.to_vec(),
    })
}

fn config() -> TrainConfig {
    TrainConfig {
        mode: lora(0.0),
        lr: 1e-2,
        batch_size: 2,
        checkpoint_every: 0,
        keep_checkpoints: 0,
        max_length: 64,
        seed: 5,
        loss_chunk: 24,
        ..TrainConfig::default()
    }
}

fn trainable(decoder: &mut Decoder) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    visit_params_mut(decoder, &mut |name, p| {
        let (on, v) = match p {
            ParamMut::Vector(t) => (t.is_require_grad(), t.clone().into_data()),
            ParamMut::Matrix(t) => (t.is_require_grad(), t.clone().into_data()),
        };
        if on {
            out.insert(name.to_string(), v.try_into_vec_as::<f32>().expect("read"));
        }
    });
    out
}

fn max_diff(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f32 {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "parameter sets differ"
    );
    a.iter()
        .flat_map(|(k, x)| x.iter().zip(&b[k]).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn vec1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("read")
}

#[test]
fn shared_prompt_forward_equals_full_sequences() {
    let dir = tiny_dir();
    let mut model = load(dir.path());
    prepare_training(&mut model, &lora(0.0), 3).expect("lora");
    // Non-zero B so the adapters matter.
    for layer in &mut model.layers {
        if let Some(ad) = layer.q_proj.lora.as_mut() {
            let [o, r] = ad.b.dims();
            let vals: Vec<f32> = (0..o * r).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect();
            ad.b = Tensor::<2>::from_data(TensorData::new(vals, [o, r]), &model.device).require_grad();
        }
    }
    let ex = &examples(3)[2];
    let rejected = ex.rejected.clone().expect("rejected");
    let full = |resp: &[u32]| {
        let mut ids = ex.prompt.clone();
        ids.extend_from_slice(resp);
        Tokenized::new(ids, ex.prompt.len()).expect("tokenized")
    };
    let (c, r) = (full(&ex.chosen), full(&rejected));
    let eager = response_logps(&model, &[&c, &r]).expect("eager");
    let eager_sum = eager.token_logps.clone().sum();
    let eager_vals = vec1(eager.token_logps.clone());

    let rh = shared_prompt_hidden(&mut model, &ex.prompt, &[&ex.chosen, &rejected], None).expect("shared");
    assert_eq!(rh.counts, eager.counts);
    let w = match &model.lm_head.weight {
        sealong::nn::LinearWeight::Dense(w) => w.clone(),
        _ => panic!("dense head expected on autodiff"),
    };
    let shared = sealong_tests::eager::label_logprobs(rh.hidden, w, &rh.labels).expect("logps");
    let shared_vals = vec1(shared.clone());
    let worst = eager_vals
        .iter()
        .zip(&shared_vals)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "token log-probs differ by {worst}");

    let g_eager = eager_sum.backward();
    let g_shared = shared.sum().backward();
    let mut worst_grad = 0.0f32;
    let mut count = 0;
    visit_params_mut(&mut model, &mut |name, p| {
        if let ParamMut::Matrix(t) = p
            && let (Some(a), Some(b)) = (t.grad(&g_eager), t.grad(&g_shared))
        {
            let a = a.into_data().try_into_vec_as::<f32>().expect("a");
            let b = b.into_data().try_into_vec_as::<f32>().expect("b");
            // Relative to the matrix's largest gradient, floored: some adapters' gradients are
            // ~1e-9 (exactly zero for A while B is zero) and there only absolute error means.
            let scale = a.iter().fold(1e-4f32, |m, x| m.max(x.abs()));
            let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max) / scale;
            assert!(d <= 1e-4, "{name}: gradients differ (relative {d})");
            worst_grad = worst_grad.max(d);
            count += 1;
        }
    });
    assert_eq!(count, 2 * 7 * 2, "every adapter matrix got a gradient in both paths");
    eprintln!("shared prompt: worst log-prob |d| {worst:.2e}, worst relative grad |d| {worst_grad:.2e}");
}

#[test]
fn adamw_step_matches_torch_formulas() {
    let dir = tiny_dir();
    let mut model = load(dir.path());
    prepare_training(&mut model, &TrainMode::Full, 1).expect("full");
    let ex = &examples(1)[0];
    let cfg = AdamWConfig {
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weight_decay: 0.1,
    };
    let mut optim = AdamW::new(cfg);
    let lr = 0.01;
    // Two steps so the bias corrections and the moments' recursion are both exercised.
    let mut m_ref: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut v_ref: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for t in 1..=2 {
        let before = trainable(&mut model);
        let rh = shared_prompt_hidden(&mut model, &ex.prompt, &[&ex.chosen], None).expect("fwd");
        let w = match &model.lm_head.weight {
            sealong::nn::LinearWeight::Dense(w) => w.clone(),
            _ => panic!("dense"),
        };
        let loss = sealong_tests::eager::label_logprobs(rh.hidden, w, &rh.labels)
            .expect("logps")
            .sum()
            .neg();
        let mut grads = loss.backward();
        let mut acc = GradAccumulator::default();
        acc.add(&mut model, &mut grads);
        let g = acc.take();
        let host_g: BTreeMap<String, Vec<f32>> = g
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_data().try_into_vec_as::<f32>().expect("g")))
            .collect();
        optim.step(&mut model, g, lr).expect("step");
        let after = trainable(&mut model);
        let mut worst = 0.0f64;
        for (name, p0) in &before {
            let gs = &host_g[name];
            let m = m_ref.entry(name.clone()).or_insert_with(|| vec![0.0; p0.len()]);
            let v = v_ref.entry(name.clone()).or_insert_with(|| vec![0.0; p0.len()]);
            for i in 0..p0.len() {
                let gi = f64::from(gs[i]);
                let mut p = f64::from(p0[i]) * (1.0 - lr * cfg.weight_decay);
                m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
                v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
                let bc1 = 1.0 - cfg.beta1.powi(t);
                let bc2 = 1.0 - cfg.beta2.powi(t);
                p -= lr / bc1 * m[i] / ((v[i].sqrt() / bc2.sqrt()) + cfg.eps);
                worst = worst.max((p - f64::from(after[name][i])).abs());
            }
        }
        assert!(
            worst <= 2e-6,
            "step {t}: AdamW differs from the f64 reference by {worst}"
        );
    }
}

#[test]
fn micro_batching_does_not_change_the_update() {
    let dir = tiny_dir();
    let mut results = Vec::new();
    for micro in [1, 4] {
        let out = tempfile::tempdir().expect("out");
        let cfg = TrainConfig {
            batch_size: 4,
            micro_batch: micro,
            max_steps: Some(1),
            ..config()
        };
        let mut t = Trainer::new(load(dir.path()), cfg, examples(4), out.path(), false).expect("trainer");
        let m = t.step_once().expect("step");
        results.push((trainable(&mut t.decoder), m.loss, m.grad_norm));
    }
    let d = max_diff(&results[0].0, &results[1].0);
    assert!(d <= 1e-6, "micro-batch 1 vs 4: parameters differ by {d}");
    assert!((results[0].1 - results[1].1).abs() <= 1e-6, "losses differ");
    assert!(
        (results[0].2 - results[1].2).abs() <= 1e-5 * results[0].2,
        "grad norms differ"
    );
}

#[test]
fn overfitting_a_few_pairs_drives_orpo_down_and_accuracy_to_one() {
    let dir = tiny_dir();
    let out = tempfile::tempdir().expect("out");
    let cfg = TrainConfig {
        batch_size: 4,
        epochs: 100,
        lr: 1e-2,
        warmup_ratio: 0.0,
        max_grad_norm: 1.0,
        ..config()
    };
    let mut t = Trainer::new(load(dir.path()), cfg, examples(4), out.path(), false).expect("trainer");
    let mut history = Vec::new();
    let outcome = t.run(&mut |m| history.push(m.clone())).expect("train");
    assert_eq!(outcome.steps_done, 100);
    let first = &history[0];
    let last = history.last().expect("steps");
    eprintln!(
        "loss {:.4} -> {:.4}, accuracy {:.2} -> {:.2}, margin {:.4} -> {:.4}",
        first.loss, last.loss, first.reward_accuracy, last.reward_accuracy, first.margin, last.margin
    );
    // A 2-layer, 32-wide model with a fixed random head cannot reach zero NLL; it gets to about
    // half of the uniform-guess loss within these steps.
    assert!(last.loss < 0.6 * first.loss, "loss {} -> {}", first.loss, last.loss);
    assert!(
        history[90..].iter().all(|m| m.reward_accuracy == 1.0),
        "accuracy must stay at 1"
    );
    assert!(last.margin > first.margin);
    // The metrics file has every step, in order.
    let lines = std::fs::read_to_string(out.path().join("metrics.jsonl")).expect("metrics");
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["step"]
                .as_u64()
                .expect("step")
        })
        .collect();
    assert_eq!(steps, (1..=100).collect::<Vec<_>>());
    // The final checkpoint exists.
    assert!(
        out.path()
            .join("checkpoints/step-000100/trainable.safetensors")
            .is_file()
    );
}

#[test]
fn sft_lowers_the_chosen_nll() {
    let dir = tiny_dir();
    let out = tempfile::tempdir().expect("out");
    let cfg = TrainConfig {
        method: Method::Sft,
        batch_size: 3,
        epochs: 120,
        lr: 1e-2,
        ..config()
    };
    let mut t = Trainer::new(load(dir.path()), cfg, examples(3), out.path(), false).expect("trainer");
    let mut history = Vec::new();
    t.run(&mut |m| history.push(m.clone())).expect("train");
    let (a, b) = (history[0].loss, history.last().expect("last").loss);
    assert!(b < 0.6 * a, "SFT loss {a} -> {b}");
}

#[test]
fn a_stopped_and_resumed_run_ends_with_the_same_weights() {
    let dir = tiny_dir();
    let cfg = TrainConfig {
        mode: lora(0.1),
        epochs: 3,
        batch_size: 2,
        checkpoint_every: 2,
        ..config()
    };
    let data = examples(5); // 3 steps per epoch (the last batch holds one pair), 9 in all

    let straight = tempfile::tempdir().expect("out");
    let mut a = Trainer::new(load(dir.path()), cfg.clone(), data.clone(), straight.path(), false).expect("a");
    let mut metrics_a = Vec::new();
    a.run(&mut |m| metrics_a.push(m.clone())).expect("run a");
    assert_eq!(metrics_a.len(), 9);

    let killed = tempfile::tempdir().expect("out");
    {
        let mut b = Trainer::new(load(dir.path()), cfg.clone(), data.clone(), killed.path(), false).expect("b");
        for _ in 0..5 {
            b.step_once().expect("step"); // checkpoints at 2 and 4; step 5 is lost with the "kill"
        }
    }
    // Without --resume the directory is refused; with it the run continues from step 4.
    let refused = Trainer::new(load(dir.path()), cfg.clone(), data.clone(), killed.path(), false);
    let msg = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("--resume"), "{msg}");
    let mut c = Trainer::new(load(dir.path()), cfg.clone(), data.clone(), killed.path(), true).expect("resume");
    assert_eq!(c.resumed_from(), 4);
    let mut metrics_c = Vec::new();
    c.run(&mut |m| metrics_c.push(m.clone())).expect("run c");

    assert_eq!(max_diff(&trainable(&mut a.decoder), &trainable(&mut c.decoder)), 0.0);
    for (x, y) in metrics_a[4..].iter().zip(&metrics_c) {
        assert_eq!((x.step, x.loss, x.grad_norm, x.lr), (y.step, y.loss, y.grad_norm, y.lr));
    }
    // The metrics file was cut back to the checkpoint and continued: 9 lines, steps 1..=9.
    let text = std::fs::read_to_string(killed.path().join("metrics.jsonl")).expect("metrics");
    let steps: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["step"]
                .as_u64()
                .expect("step")
        })
        .collect();
    assert_eq!(steps, (1..=9).collect::<Vec<_>>());
    // Resuming with a different recipe or different data is refused.
    let other = TrainConfig {
        lr: 5e-3,
        ..cfg.clone()
    };
    let e = Trainer::new(load(dir.path()), other, data.clone(), killed.path(), true)
        .err()
        .map(|e| e.to_string());
    assert!(e.as_deref().is_some_and(|m| m.contains("different recipe")), "{e:?}");
    let e = Trainer::new(load(dir.path()), cfg, examples(6), killed.path(), true)
        .err()
        .map(|e| e.to_string());
    assert!(e.as_deref().is_some_and(|m| m.contains("data differ")), "{e:?}");
}

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_checkpoint() {
    let dir = tiny_dir();
    let out = tempfile::tempdir().expect("out");
    let cfg = TrainConfig {
        lr: 1e4,
        warmup_ratio: 0.0,
        max_grad_norm: 0.0,
        epochs: 50,
        checkpoint_every: 1,
        keep_checkpoints: 1,
        ..config()
    };
    let mut t = Trainer::new(load(dir.path()), cfg.clone(), examples(2), out.path(), false).expect("trainer");
    let err = t.run(&mut |_| {}).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("non-finite"), "expected a non-finite stop, got {err:?}");
    assert!(err.contains("last good checkpoint"), "{err}");
    let stopped_at = t.step;
    assert!(stopped_at < 50);
    // The last good checkpoint is the step before the failure, and it loads.
    let ckpts = sealong::train::checkpoint::list(out.path()).expect("list");
    assert_eq!(ckpts.last().map(|c| c.0), Some(stopped_at));
    if stopped_at > 0 {
        let resumed = Trainer::new(load(dir.path()), cfg, examples(2), out.path(), true).expect("resume");
        assert_eq!(resumed.resumed_from(), stopped_at);
    }
}

#[test]
fn bad_recipes_are_refused() {
    let dir = tiny_dir();
    let out = tempfile::tempdir().expect("out");
    for (cfg, what) in [
        (TrainConfig { lr: 0.0, ..config() }, "learning rate"),
        (
            TrainConfig {
                batch_size: 0,
                ..config()
            },
            "batch size",
        ),
        (
            TrainConfig {
                warmup_ratio: 2.0,
                ..config()
            },
            "warm-up",
        ),
    ] {
        let e = Trainer::new(load(dir.path()), cfg, examples(2), out.path(), false)
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|m| m.contains(what)), "{what}: {e:?}");
    }
    let e = Trainer::new(load(dir.path()), config(), Vec::new(), out.path(), false)
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|m| m.contains("no training examples")),
        "{e:?}"
    );
    let mut long = examples(1);
    long[0].prompt = vec![1; 70];
    let e = Trainer::new(load(dir.path()), config(), long, out.path(), false)
        .err()
        .map(|e| e.to_string());
    assert!(e.as_deref().is_some_and(|m| m.contains("context")), "{e:?}");
}

/// The same run on burn-wgpu (lavapipe in CI: the fused loss's cubecl step, autodiff on the GPU
/// backend) follows the CPU run: the losses of three AdamW steps (each depends on the updates
/// before it) within 1e-5 relative. Parameters are compared loosely: Adam divides by the
/// gradient's running RMS, so an element whose gradient is rounding noise (~1e-9 here) moves by
/// up to the learning rate in a direction the noise picks, on either backend.
#[test]
fn the_wgpu_backend_trains_like_the_cpu() {
    let dir = tiny_dir();
    let path = ModelPath::detect(dir.path()).expect("detect");
    let cfg = TrainConfig {
        max_steps: Some(3),
        warmup_ratio: 0.0,
        lr: 1e-2,
        ..config()
    };
    let mut runs = Vec::new();
    for device in [Device::flex().autodiff(), sealong_tests::wgpu_device().autodiff()] {
        let out = tempfile::tempdir().expect("out");
        let model = Decoder::load(&path, &device).expect("load");
        let mut t = Trainer::new(model, cfg.clone(), examples(4), out.path(), false).expect("trainer");
        let mut losses = Vec::new();
        t.run(&mut |m| losses.push(m.loss)).expect("train");
        runs.push((trainable(&mut t.decoder), losses));
    }
    let d = max_diff(&runs[0].0, &runs[1].0);
    eprintln!(
        "wgpu vs cpu after 3 steps: parameters max |d| {d:.2e}, losses {:?} vs {:?}",
        runs[0].1, runs[1].1
    );
    assert!(d as f64 <= 3.0 * cfg.lr, "wgpu vs cpu parameters differ by {d}");
    for (a, b) in runs[0].1.iter().zip(&runs[1].1) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "losses {a} vs {b}");
    }
}
