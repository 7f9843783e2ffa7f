//! Long-context training (issue 14): the fused attention with its own backward
//! (`shaders/src/attention`) and activation checkpointing per layer (`core/src/train/recompute.rs`)
//! against the eager path they replace.
//! - fused attention = the materialized twin, forward and gradients (GQA, shared prefix,
//!   right-padded batch rows), on the CPU and on wgpu (lavapipe);
//! - one checkpointed example step = the eager step (materialized attention, whole graph kept):
//!   loss within 1e-5 relative, every trainable gradient within 1e-4 relative, for LoRA with
//!   dropout and for full fine-tuning, on a tiny model;
//! - the same on SmolLM2-135M at a 512-token prompt;
//! - central finite differences of the checkpointed loss on a tiny model;
//! - a Trainer run with checkpointing equals one without.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use sealong::loading::ModelPath;
use sealong::models::decoder::Decoder;
use sealong::nn::LinearWeight;
use sealong::train::loss::{ResponseHidden, shared_prompt_hidden};
use sealong::train::optim::GradAccumulator;
use sealong::train::orpo::{OrpoStats, orpo_loss};
use sealong::train::recompute::shared_prompt_step;
use sealong::train::{LoraConfig, LoraTarget, TrainMode, prepare_training};
use sealong_shaders::attention::{attention_reference, flash_attention};
use sealong_tests::tiny::{self, TinySpec};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32")
}

fn random(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Largest difference relative to the largest magnitude of `want` (floored at 1e-3).
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
    sealong_tests::max_abs_diff(got, want) / scale
}

/// Forward and the gradients of `Σ c ∘ o` of both attentions on `device`.
fn attention_case(device: &Device, prefix: usize, hd: usize) {
    // 137 queries and up to 166 keys: several tiles of the host kernel (128 rows) and of the
    // cubecl kernels (32 rows at hd = 16, 16 at hd = 64), none of them whole.
    let (b, h, kvh, s) = (2, 6, 2, 137);
    let q = random([b, h, s, hd], 1, device).require_grad();
    let k = random([b, kvh, s, hd], 2, device).require_grad();
    let v = random([b, kvh, s, hd], 3, device).require_grad();
    let pk = random([1, kvh, prefix.max(1), hd], 4, device).require_grad();
    let pv = random([1, kvh, prefix.max(1), hd], 5, device).require_grad();
    let c = random([b, h, s, hd], 6, device);
    let pre = (prefix > 0).then(|| (pk.clone(), pv.clone()));
    let fused = flash_attention(q.clone(), k.clone(), v.clone(), pre.clone()).expect("fused");
    let twin = attention_reference(q.clone(), k.clone(), v.clone(), pre).expect("twin");
    let d = sealong_tests::max_abs_diff(&values(fused.clone()), &values(twin.clone()));
    // f32 sums over at most 166 keys, two summation orders: 1e-5 absolute on outputs of size ~1.
    assert!(d <= 1e-5, "prefix {prefix}, hd {hd}: outputs differ by {d}");
    let gf = (fused * c.clone()).sum().backward();
    let gt = (twin * c).sum().backward();
    let mut names = vec![("q", &q), ("k", &k), ("v", &v)];
    if prefix > 0 {
        names.extend([("pk", &pk), ("pv", &pv)]);
    }
    for (name, t) in names {
        let (a, w) = (t.grad(&gf).expect("fused grad"), t.grad(&gt).expect("twin grad"));
        let r = rel_diff(&values(a), &values(w));
        assert!(r <= 1e-4, "prefix {prefix}, hd {hd}: d{name} differs (relative {r})");
    }
}

#[test]
fn fused_attention_equals_the_materialized_twin_on_the_cpu() {
    for prefix in [0, 29] {
        attention_case(&Device::flex().autodiff(), prefix, 16);
    }
}

/// On wgpu both directions are the cubecl kernels (`shaders/src/attention/cube.rs`).
#[test]
fn fused_attention_equals_the_materialized_twin_on_wgpu() {
    for (prefix, hd) in [(0, 16), (29, 16), (29, 64)] {
        attention_case(&sealong_tests::wgpu_device().autodiff(), prefix, hd);
    }
}

/// The cubecl kernels at a thousand keys a row (hd = 64, a shared prefix, GQA) equal the host
/// kernels, forward and gradients. Before their head-dimension loops were unrolled, rows past
/// about 450 keys came back unwritten on lavapipe, whose shaders stop after 65,535 loop
/// iterations an invocation.
#[test]
fn fused_attention_on_wgpu_equals_the_host_kernels_at_a_thousand_keys() {
    let run = |device: &Device| {
        let (b, h, kvh, s, hd, p) = (1, 2, 1, 1000, 64, 40);
        let q = random([b, h, s, hd], 1, device).require_grad();
        let k = random([b, kvh, s, hd], 2, device).require_grad();
        let v = random([b, kvh, s, hd], 3, device).require_grad();
        let pk = random([1, kvh, p, hd], 4, device).require_grad();
        let pv = random([1, kvh, p, hd], 5, device).require_grad();
        let c = random([b, h, s, hd], 6, device);
        let o = flash_attention(q.clone(), k.clone(), v.clone(), Some((pk.clone(), pv.clone()))).expect("fused");
        let g = (o.clone() * c).sum().backward();
        let grads = [&q, &k, &v, &pk, &pv].map(|t| values(t.grad(&g).expect("grad")));
        (values(o), grads)
    };
    let (host_o, host_g) = run(&Device::flex().autodiff());
    let (gpu_o, gpu_g) = run(&sealong_tests::wgpu_device().autodiff());
    // Two summation orders over up to 1,040 keys.
    let d = sealong_tests::max_abs_diff(&gpu_o, &host_o);
    assert!(d <= 1e-5, "outputs differ by {d}");
    for (name, (a, w)) in ["q", "k", "v", "pk", "pv"].iter().zip(gpu_g.iter().zip(&host_g)) {
        let r = rel_diff(a, w);
        assert!(r <= 1e-4, "d{name} differs (relative {r})");
    }
}

#[test]
fn fused_attention_refuses_inconsistent_shapes() {
    let device = Device::flex();
    let q = random([1, 4, 5, 8], 1, &device);
    let k = random([1, 3, 5, 8], 2, &device);
    let e = flash_attention(q.clone(), k.clone(), k, None).expect_err("4 heads over 3 kv heads");
    assert!(e.to_string().contains("not a multiple"), "{e}");
    let k = random([1, 2, 5, 8], 2, &device);
    let bad_prefix = random([2, 2, 3, 8], 3, &device);
    let e = flash_attention(q, k.clone(), k, Some((bad_prefix.clone(), bad_prefix))).expect_err("batch-2 prefix");
    assert!(e.to_string().contains("prefix"), "{e}");
}

fn tiny_model(dir: &Path, spec: &TinySpec) -> Decoder {
    tiny::write_hf_dir(dir, spec, &tiny::random_weights(spec, 21));
    Decoder::load(&ModelPath::detect(dir).expect("detect"), &Device::flex().autodiff()).expect("load")
}

/// ORPO through the fused vocabulary-chunked loss, as the trainer computes it.
fn orpo(decoder: &Decoder, rh: ResponseHidden) -> sealong::Result<(Tensor<1>, OrpoStats)> {
    use sealong_shaders::loss as fused;
    let mut segments = Vec::new();
    let mut start = 0;
    for &c in &rh.counts {
        segments.push(start..start + c);
        start += c;
    }
    // A GGUF's head stays quantized on the CPU (frozen); the loss reads it chunk by chunk.
    let sums = match &decoder.lm_head.weight {
        LinearWeight::Dense(w) => fused::segment_logprob_sums_chunked(rh.hidden, w.clone(), &rh.labels, &segments, 40),
        LinearWeight::Quant(q) => fused::segment_logprob_sums_frozen_head(
            rh.hidden,
            &sealong_shaders::frozen::Frozen(q.clone()),
            &rh.labels,
            &segments,
            40,
        ),
    }
    .expect("sums");
    let out = orpo_loss(sums, &rh.counts, 0.1).expect("orpo");
    let s = out.stats();
    Ok((out.loss, s))
}

type Grads = BTreeMap<String, Vec<f32>>;

fn grads_of(acc: &mut GradAccumulator) -> Grads {
    acc.take().into_iter().map(|(k, v)| (k, values(v))).collect()
}

/// The eager step: materialized attention, the whole graph kept, one backward.
fn eager_step(model: &mut Decoder, prompt: &[u32], responses: &[&[u32]], dropout: Option<(u64, u64)>) -> (f64, Grads) {
    model.fused_attention = false;
    let rh = shared_prompt_hidden(model, prompt, responses, dropout).expect("forward");
    let (loss, logged) = orpo(model, rh).expect("loss");
    let mut grads = loss.backward();
    let mut acc = GradAccumulator::default();
    acc.add(model, &mut grads);
    (logged.loss, grads_of(&mut acc))
}

/// The checkpointed step with the fused attention, every layer recomputed.
fn checkpointed_step(
    model: &mut Decoder,
    prompt: &[u32],
    responses: &[&[u32]],
    dropout: Option<(u64, u64)>,
) -> (f64, Grads) {
    partly_checkpointed_step(model, prompt, responses, dropout, 0)
}

/// The same with the first `eager` layers keeping their graph.
fn partly_checkpointed_step(
    model: &mut Decoder,
    prompt: &[u32],
    responses: &[&[u32]],
    dropout: Option<(u64, u64)>,
    eager: usize,
) -> (f64, Grads) {
    model.fused_attention = true;
    let mut acc = GradAccumulator::default();
    let logged = shared_prompt_step(model, prompt, responses, dropout, 1.0, eager, &mut orpo, &mut acc).expect("step");
    (logged.loss, grads_of(&mut acc))
}

fn compare(what: &str, eager: &(f64, Grads), ckpt: &(f64, Grads)) {
    let rel = (eager.0 - ckpt.0).abs() / eager.0.abs().max(1e-12);
    assert!(
        rel <= 1e-5,
        "{what}: loss {} vs {} (relative {rel:.2e})",
        eager.0,
        ckpt.0
    );
    assert_eq!(
        eager.1.keys().collect::<Vec<_>>(),
        ckpt.1.keys().collect::<Vec<_>>(),
        "{what}: the same parameters get gradients"
    );
    let mut worst = 0.0f32;
    for (name, e) in &eager.1 {
        let r = rel_diff(&ckpt.1[name], e);
        assert!(r <= 1e-4, "{what}: {name} gradients differ (relative {r:.2e})");
        worst = worst.max(r);
    }
    eprintln!(
        "{what}: loss {:.6} vs {:.6}, {} gradients, worst relative |d| {worst:.2e}",
        eager.0,
        ckpt.0,
        eager.1.len()
    );
}

fn lora(dropout: f64) -> TrainMode {
    TrainMode::Lora(LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout,
        targets: LoraTarget::ALL.to_vec(),
    })
}

/// Non-zero B so that every adapter has a gradient and matters in the forward.
fn perturb_lora_b(model: &mut Decoder) {
    let device = model.device.clone();
    for layer in &mut model.layers {
        for lin in [
            &mut layer.q_proj,
            &mut layer.k_proj,
            &mut layer.v_proj,
            &mut layer.o_proj,
            &mut layer.gate_proj,
            &mut layer.up_proj,
            &mut layer.down_proj,
        ] {
            if let Some(ad) = lin.lora.as_mut() {
                let [o, r] = ad.b.dims();
                let vals: Vec<f32> = (0..o * r).map(|i| ((i % 7) as f32 - 3.0) * 0.03).collect();
                ad.b = Tensor::<2>::from_data(TensorData::new(vals, [o, r]), &device).require_grad();
            }
        }
    }
}

fn pair(p: usize, r1: usize, r2: usize, vocab: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let ids = |n: usize, a: usize, b: usize| {
        (0..n)
            .map(|i| ((i * a + b) % vocab as usize) as u32)
            .collect::<Vec<_>>()
    };
    (ids(p, 7, 1), ids(r1, 11, 2), ids(r2, 5, 9))
}

#[test]
fn a_checkpointed_step_equals_the_eager_step_on_a_tiny_model() {
    for (name, spec) in [("llama", TinySpec::llama()), ("qwen2", TinySpec::qwen2())] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut model = tiny_model(dir.path(), &spec);
        prepare_training(&mut model, &lora(0.1), 3).expect("lora");
        perturb_lora_b(&mut model);
        let (prompt, chosen, rejected) = pair(23, 6, 9, spec.vocab as u32);
        let responses: [&[u32]; 2] = [&chosen, &rejected];
        let dropout = Some((5, 7));
        let eager = eager_step(&mut model, &prompt, &responses, dropout);
        let ckpt = checkpointed_step(&mut model, &prompt, &responses, dropout);
        assert_eq!(
            eager.1.len(),
            2 * 7 * spec.layers,
            "every adapter matrix has a gradient"
        );
        compare(&format!("tiny {name}, LoRA with dropout"), &eager, &ckpt);
        // The first layer (then every layer) eager, the rest recomputed.
        for k in [1, spec.layers] {
            let part = partly_checkpointed_step(&mut model, &prompt, &responses, dropout, k);
            compare(
                &format!("tiny {name}, LoRA with dropout, {k} eager layers"),
                &eager,
                &part,
            );
        }
    }
    // Full fine-tuning: norms, biases, the embedding and the head train too.
    let spec = TinySpec {
        qkv_bias: true,
        tied: false,
        ..TinySpec::small()
    };
    let dir = tempfile::tempdir().expect("tmp");
    let mut model = tiny_model(dir.path(), &spec);
    prepare_training(&mut model, &TrainMode::Full, 3).expect("full");
    let (prompt, chosen, rejected) = pair(17, 5, 1, spec.vocab as u32);
    let responses: [&[u32]; 2] = [&chosen, &rejected];
    let eager = eager_step(&mut model, &prompt, &responses, None);
    let ckpt = checkpointed_step(&mut model, &prompt, &responses, None);
    assert!(
        eager.1.contains_key("model.embed_tokens.weight"),
        "{:?}",
        eager.1.keys()
    );
    compare("tiny, full fine-tuning, a 1-token response", &eager, &ckpt);
    // One eager layer: the embedding's gradient comes through the eager graph.
    let part = partly_checkpointed_step(&mut model, &prompt, &responses, None, 1);
    compare("tiny, full fine-tuning, one eager layer", &eager, &part);
}

/// Central differences of the checkpointed loss in three LoRA entries against its gradient.
#[test]
fn the_checkpointed_gradient_matches_finite_differences() {
    let spec = TinySpec::llama();
    let dir = tempfile::tempdir().expect("tmp");
    let mut model = tiny_model(dir.path(), &spec);
    prepare_training(&mut model, &lora(0.0), 3).expect("lora");
    perturb_lora_b(&mut model);
    let (prompt, chosen, rejected) = pair(13, 4, 6, spec.vocab as u32);
    let responses: [&[u32]; 2] = [&chosen, &rejected];
    let (_, grads) = checkpointed_step(&mut model, &prompt, &responses, None);
    let name = "model.layers.0.self_attn.q_proj.lora_B.weight";
    let g = &grads[name];
    let eps = 1e-2f32;
    let device = model.device.clone();
    for idx in [0usize, 5, 17] {
        let mut loss_at = |delta: f32| {
            let set = |model: &mut Decoder, delta: f32| {
                let ad = model.layers[0].q_proj.lora.as_mut().expect("adapter");
                let [o, r] = ad.b.dims();
                let mut b = values(ad.b.clone());
                b[idx] += delta;
                ad.b = Tensor::<2>::from_data(TensorData::new(b, [o, r]), &device).require_grad();
            };
            set(&mut model, delta);
            let (l, _) = checkpointed_step(&mut model, &prompt, &responses, None);
            set(&mut model, -delta);
            l
        };
        let fd = (loss_at(eps) - loss_at(-eps)) / (2.0 * f64::from(eps));
        // f32 losses of ~5 differenced at eps 1e-2: about 1e-4 of rounding, plus eps^2 curvature.
        assert!(
            (fd - f64::from(g[idx])).abs() <= 2e-3 + 1e-2 * fd.abs(),
            "{name}[{idx}]: finite difference {fd} vs gradient {}",
            g[idx]
        );
    }
}

/// SmolLM2-135M (the default Q4_1 GGUF, dequantized for training) with a 512-token prompt.
#[test]
fn a_checkpointed_step_equals_the_eager_step_on_smollm2_at_512_tokens() {
    let path = ModelPath::detect(&sealong_tests::smollm_path()).expect("detect");
    let mut model = Decoder::load(&path, &Device::flex().autodiff()).expect("load");
    prepare_training(&mut model, &lora(0.0), 3).expect("lora");
    perturb_lora_b(&mut model);
    let (prompt, chosen, rejected) = pair(512, 48, 40, 49_000);
    let responses: [&[u32]; 2] = [&chosen, &rejected];
    let eager = eager_step(&mut model, &prompt, &responses, None);
    let ckpt = checkpointed_step(&mut model, &prompt, &responses, None);
    compare("SmolLM2-135M, 512-token prompt", &eager, &ckpt);
}

fn tiny_examples() -> Vec<sealong::train::Example> {
    (0..2)
        .map(|k| {
            let (prompt, chosen, rejected) = pair(20 + k, 4, 5, 60);
            sealong::train::Example {
                id: format!("ex{k}"),
                prompt,
                chosen,
                rejected: Some(rejected),
                truncated: false,
            }
        })
        .collect()
}

/// The trainer records each step's peak RSS, and a step predicted not to fit is refused before
/// it starts, naming the example, its lengths and a length that fits.
#[test]
fn steps_record_peak_rss_and_a_step_that_cannot_fit_is_refused_up_front() {
    use sealong::train::{TrainConfig, Trainer};
    let dir = tempfile::tempdir().expect("tmp");
    let model = tiny_model(dir.path(), &TinySpec::small());
    let out = tempfile::tempdir().expect("out");
    let config = TrainConfig {
        mode: lora(0.0),
        batch_size: 2,
        max_steps: Some(1),
        checkpoint_every: 0,
        max_length: 64,
        loss_chunk: 24,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(model, config, tiny_examples(), out.path(), false).expect("trainer");
    let (need, per_position) = t.predicted_step_bytes(&t.examples()[1]);
    assert!(need > 0.0 && per_position > 0.0);
    let e = t
        .check_memory_within(need / 2.0)
        .expect_err("half the predicted memory");
    let msg = e.to_string();
    for part in ["\"ex1\"", "21 prompt tokens", "lower --max-length to about"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    t.check_memory_within(need * 2.0)
        .expect("twice the predicted memory is enough");
    t.run(&mut |_| {}).expect("train");
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).expect("metrics");
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().expect("a line")).expect("json");
    let peak = first["peak_rss_mib"].as_f64().expect("peak_rss_mib");
    assert!(peak > 1.0, "peak RSS {peak} MiB");
}

/// Checkpointing lowers the predicted per-position memory of SmolLM2's shape by several times.
#[test]
fn the_memory_model_charges_checkpointing_one_layer() {
    use sealong::train::trainer::step_bytes;
    let path = ModelPath::detect(&sealong_tests::smollm_path()).expect("detect");
    let (config, _) = sealong::models::decoder::weights::DecoderWeights::load(&path).expect("weights");
    let (on, per_on) = step_bytes(&config, 8192, 512, true, 8192);
    let (off, per_off) = step_bytes(&config, 8192, 512, false, 8192);
    assert!(per_off > 10.0 * per_on, "{per_off} vs {per_on}");
    // Measured (BENCHMARKS.md): 127 KiB per position with checkpointing; the model must not
    // promise less than the floor of one f32 hidden state per layer.
    assert!(per_on >= 30.0 * 576.0 * 4.0, "{per_on}");
    assert!(on < off);
}

/// A prompt too long for `max_length` is skipped with its lengths named, or, with
/// `truncate_prompt_middle`, kept with the middle of its tokens cut (the chat template's head and
/// the question at the end survive).
#[test]
fn a_too_long_prompt_is_skipped_or_cut_in_the_middle() {
    use sealong::data::pairs::PreferencePair;
    use sealong::loading::TextAssets;
    use sealong::train::{Method, prepare_examples};
    let path = ModelPath::detect(&sealong_tests::smollm_path()).expect("detect");
    let assets = TextAssets::load(&path).expect("assets");
    let context = "The river flows past the old mill and the bridge. ".repeat(40);
    let pair = PreferencePair {
        id: "long".into(),
        prompt: format!("{context}\n\nQuestion: which mill?"),
        chosen: "The old mill.".into(),
        rejected: Some("The bridge.".into()),
        line: 7,
    };
    let (kept, skipped) =
        prepare_examples(&assets, std::slice::from_ref(&pair), Method::Orpo, 128, false).expect("prepare");
    assert!(kept.is_empty());
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].reason.contains("max length is 128"), "{}", skipped[0].reason);
    assert_eq!(skipped[0].line, 7);

    let (kept, skipped) =
        prepare_examples(&assets, std::slice::from_ref(&pair), Method::Orpo, 128, true).expect("prepare");
    assert!(skipped.is_empty(), "{skipped:?}");
    let ex = &kept[0];
    assert!(ex.truncated);
    let longest = ex.chosen.len().max(ex.rejected.as_ref().map_or(0, Vec::len));
    assert!(ex.prompt.len() + longest <= 128, "{} + {longest}", ex.prompt.len());
    let (_, full) = assets.chat_prompt(&pair.prompt).expect("full prompt");
    let half = ex.prompt.len() / 2;
    assert_eq!(ex.prompt[..half], full[..half], "the head survives");
    let tail = ex.prompt.len() - half;
    assert_eq!(
        ex.prompt[half..],
        full[full.len() - tail..],
        "the tail (question, generation prompt) survives"
    );
}

// --- The frozen storage-format product with its LoRA adapter, and the fused SwiGLU -----------
// (`shaders/src/frozen.rs`, `shaders/src/swiglu.rs`): each against its twin in plain burn ops
// (the dense weight and burn's matmul; `silu(g) * u`), forward and gradients, on the CPU backend
// (the host kernels) and on wgpu (the ops composed of the backend's primitives).

fn random2(shape: [usize; 2], seed: u64, device: &Device) -> Tensor<2> {
    random([1, 1, shape[0], shape[1]], seed, device).reshape(shape)
}

/// Layer 0's `q_proj` of the default SmolLM2 GGUF: real Q4_1 blocks, `[576, 576]`.
fn smollm_q4_1_weight() -> sealong_shaders::frozen::Frozen {
    let path = ModelPath::detect(&sealong_tests::smollm_path()).expect("detect");
    let model = Decoder::load(&path, &Device::flex()).expect("load");
    match &model.layers[0].q_proj.weight {
        LinearWeight::Quant(q) => sealong_shaders::frozen::Frozen(q.clone()),
        LinearWeight::Dense(_) => panic!("the default GGUF's q_proj should stay Q4_1 on the CPU"),
    }
}

fn frozen_lora_case(device: &Device, w: &sealong_shaders::frozen::Frozen, with_dropout: bool) {
    use sealong_shaders::frozen::{frozen_lora_linear, frozen_lora_linear_reference};
    let (m, r, n, k) = (37, 16, w.0.rows(), w.0.cols());
    let x = random2([m, k], 11, device).require_grad();
    let a = random2([r, k], 12, device).mul_scalar(0.05).require_grad();
    let b = random2([n, r], 13, device).mul_scalar(0.05).require_grad();
    let c = random2([m, n], 14, device);
    // Dropout: the adapter's input is another tensor of the graph (x ∘ mask, one per graph: a
    // backward consumes its graph); without, x itself.
    let mask = random2([m, k], 15, device)
        .greater_elem(-0.6)
        .float()
        .mul_scalar(1.0 / 0.8);
    let xd = || {
        if with_dropout {
            x.clone() * mask.clone()
        } else {
            x.clone()
        }
    };
    let fused = frozen_lora_linear(x.clone(), xd(), w, a.clone(), b.clone(), 2.0);
    let twin = frozen_lora_linear_reference(x.clone(), xd(), w, a.clone(), b.clone(), 2.0);
    // f32 sums over 576 products in two orders (blocked GEMM vs burn's): 1e-5 of the output's scale.
    let r_out = rel_diff(&values(fused.clone()), &values(twin.clone()));
    assert!(
        r_out <= 1e-5,
        "dropout {with_dropout}: outputs differ (relative {r_out})"
    );
    let gf = (fused * c.clone()).sum().backward();
    let gt = (twin * c).sum().backward();
    for (name, t) in [("x", &x), ("A", &a), ("B", &b)] {
        let (g, want) = (t.grad(&gf).expect("fused grad"), t.grad(&gt).expect("twin grad"));
        let rel = rel_diff(&values(g), &values(want));
        assert!(rel <= 1e-4, "dropout {with_dropout}: d{name} differs (relative {rel})");
    }
}

#[test]
fn the_frozen_q4_1_product_with_lora_equals_the_dense_twin_on_the_cpu() {
    let w = smollm_q4_1_weight();
    for with_dropout in [false, true] {
        frozen_lora_case(&Device::flex().autodiff(), &w, with_dropout);
    }
    // Without autodiff (the checkpointed first forward): the same values.
    let device = Device::flex();
    let x = random2([300, 576], 21, &device);
    let a = random2([8, 576], 22, &device);
    let b = random2([576, 8], 23, &device);
    let fused = sealong_shaders::frozen::frozen_lora_linear(x.clone(), x.clone(), &w, a.clone(), b.clone(), 0.5);
    let twin = sealong_shaders::frozen::frozen_lora_linear_reference(x.clone(), x, &w, a, b, 0.5);
    let rel = rel_diff(&values(fused), &values(twin));
    assert!(rel <= 1e-5, "plain forward differs (relative {rel})");
}

#[test]
fn the_frozen_q4_1_product_with_lora_equals_the_dense_twin_on_wgpu() {
    let w = smollm_q4_1_weight();
    frozen_lora_case(&sealong_tests::wgpu_device().autodiff(), &w, true);
}

/// The fused loss with the output head kept in its stored format (SmolLM2's real tied head,
/// `[49152, 576]` as the GGUF stores it) against the same loss over the head expanded to f32
/// (the dense chunked path, itself checked against the eager twin and finite differences in
/// `loss_kernel`): ORPO's loss within 1e-5 relative and d hidden within 1e-4 relative (the
/// loss_kernel tolerances), at a chunk that divides the vocabulary and one that does not, on the
/// CPU (the host kernels) and on wgpu (where the head is expanded on the device).
fn frozen_head_case(device: &Device, head: &sealong_shaders::frozen::Frozen, chunk: usize) {
    use sealong_shaders::loss as fused;
    let (t, h, v) = (37, head.0.cols(), head.0.rows());
    let hidden = random2([t, h], 41, device).mul_scalar(2.0);
    let labels: Vec<u32> = (0..t as u64).map(|i| ((i * 7_919 + 13) % v as u64) as u32).collect();
    let counts = [20usize, 17];
    let segments = [0..20, 20..37];
    let dense = Tensor::<2>::from_data(TensorData::new(head.to_f32(), [v, h]), device);
    let run = |stored: bool| {
        let x = hidden.clone().require_grad();
        let sums = if stored {
            fused::segment_logprob_sums_frozen_head(x.clone(), head, &labels, &segments, chunk)
        } else {
            fused::segment_logprob_sums_chunked(x.clone(), dense.clone(), &labels, &segments, chunk)
        }
        .expect("sums");
        let loss = orpo_loss(sums, &counts, 0.1).expect("orpo").loss;
        let value = values(loss.clone().detach())[0];
        let grads = loss.backward();
        (value, values(x.grad(&grads).expect("d hidden")))
    };
    let ((ls, gs), (ld, gd)) = (run(true), run(false));
    assert!(
        (ls - ld).abs() <= 1e-5 * ld.abs().max(1.0),
        "chunk {chunk}: loss {ls} vs {ld}"
    );
    let r = rel_diff(&gs, &gd);
    assert!(r <= 1e-4, "chunk {chunk}: d hidden differs (relative {r})");
}

#[test]
fn the_loss_over_a_stored_head_equals_the_loss_over_its_f32_expansion() {
    let path = ModelPath::detect(&sealong_tests::smollm_path()).expect("detect");
    let model = Decoder::load(&path, &Device::flex()).expect("load");
    let head = match &model.lm_head.weight {
        LinearWeight::Quant(q) => sealong_shaders::frozen::Frozen(q.clone()),
        LinearWeight::Dense(_) => panic!("the default GGUF's head should stay stored on the CPU"),
    };
    for chunk in [8192, 5000] {
        frozen_head_case(&Device::flex().autodiff(), &head, chunk);
    }
    frozen_head_case(&sealong_tests::wgpu_device().autodiff(), &head, 8192);
}

fn swiglu_case(device: &Device) {
    use sealong_shaders::swiglu::{swiglu, swiglu_reference};
    let shape = [3, 41, 97];
    let g = random([1, shape[0], shape[1], shape[2]], 31, device)
        .mul_scalar(6.0)
        .reshape(shape)
        .require_grad();
    let u = random([1, shape[0], shape[1], shape[2]], 32, device)
        .reshape(shape)
        .require_grad();
    let c = random([1, shape[0], shape[1], shape[2]], 33, device).reshape(shape);
    let (fused, twin) = (swiglu(g.clone(), u.clone()), swiglu_reference(g.clone(), u.clone()));
    // The polynomial exp against libm's: a few ulps of values up to ~6.
    let r_out = rel_diff(&values(fused.clone()), &values(twin.clone()));
    assert!(r_out <= 1e-6, "outputs differ (relative {r_out})");
    let gf = (fused * c.clone()).sum().backward();
    let gt = (twin * c).sum().backward();
    for (name, t) in [("g", &g), ("u", &u)] {
        let rel = rel_diff(
            &values(t.grad(&gf).expect("fused")),
            &values(t.grad(&gt).expect("twin")),
        );
        assert!(rel <= 1e-5, "d{name} differs (relative {rel})");
    }
}

#[test]
fn the_fused_swiglu_equals_its_twin_on_the_cpu_and_on_wgpu() {
    swiglu_case(&Device::flex().autodiff());
    swiglu_case(&sealong_tests::wgpu_device().autodiff());
}

/// The host kernel's gradients against central differences of `silu(g) u` in f64.
#[test]
fn the_fused_swiglu_gradient_matches_finite_differences() {
    let f = |g: f64, u: f64| g * u / (1.0 + (-g).exp());
    let g: Vec<f32> = vec![-9.0, -2.5, -0.3, 0.0, 0.7, 3.1, 12.0];
    let u: Vec<f32> = vec![0.5, -1.25, 2.0, 1.0, -0.75, 1.5, -0.2];
    let dy = vec![1.0f32; g.len()];
    let (dg, du) = sealong_shaders::swiglu::host_backward(&g, &u, &dy);
    let eps = 1e-4;
    for i in 0..g.len() {
        let (gi, ui) = (f64::from(g[i]), f64::from(u[i]));
        let fd_g = (f(gi + eps, ui) - f(gi - eps, ui)) / (2.0 * eps);
        let fd_u = (f(gi, ui + eps) - f(gi, ui - eps)) / (2.0 * eps);
        // f32 arithmetic in the kernel: 1e-5 relative to the derivative's magnitude (floored at 1).
        assert!(
            (f64::from(dg[i]) - fd_g).abs() <= 1e-5 * fd_g.abs().max(1.0),
            "dg[{i}] {} vs {fd_g}",
            dg[i]
        );
        assert!(
            (f64::from(du[i]) - fd_u).abs() <= 1e-5 * fd_u.abs().max(1.0),
            "du[{i}] {} vs {fd_u}",
            du[i]
        );
    }
}

/// The kernels' `exp` (softmax, attention backward, SwiGLU) against f64's over its whole range:
/// 2e-7 relative (Cephes' bound is ~2e-7; f32's own rounding is 6e-8), exactly 0 below -87 and
/// for -inf (masked scores), NaN for NaN. Every 1/64th from -87 to 88, plus odd points.
#[test]
fn the_kernels_exp_is_within_2e_7_of_f64_exp() {
    use sealong_shaders::host::exp_f32;
    let mut xs: Vec<f32> = (-87 * 64..=88 * 64).map(|i| i as f32 / 64.0).collect();
    xs.extend([
        -86.99,
        -1e-7,
        1e-7,
        0.346_573_6,
        87.99,
        1.0 / 3.0,
        -std::f32::consts::PI,
    ]);
    for x in xs {
        let (got, want) = (f64::from(exp_f32(x)), f64::from(x).exp());
        assert!((got - want).abs() <= 2e-7 * want, "exp({x}) = {got}, want {want}");
    }
    for x in [-87.5f32, -100.0, -1e30, f32::NEG_INFINITY] {
        assert_eq!(exp_f32(x), 0.0, "exp({x})");
    }
    assert!(exp_f32(f32::NAN).is_nan());
    assert_eq!(exp_f32(1000.0), exp_f32(88.0), "saturates at e^88");
}

/// One LoRA (r = 16, all seven projections) ORPO step of a random model of `spec`, written by
/// the test generator with every matrix in Q8_0, on one pair: a `prompt`-token prompt and two
/// `response`-token responses. Returns the step's figures as a JSON line.
fn random_q8_0_orpo_step(spec: &TinySpec, prompt: usize, response: usize) -> serde_json::Value {
    use sealong::train::{Example, TrainConfig, Trainer};
    use std::time::Instant;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("random-q8_0.gguf");
    let started = Instant::now();
    tiny::write_random_gguf_q8_0(&path, spec, 7);
    let write_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let model = Decoder::load(&ModelPath::detect(&path).expect("detect"), &Device::flex().autodiff()).expect("load");
    let load_s = started.elapsed().as_secs_f64();
    let (p, chosen, rejected) = pair(prompt, response, response, spec.vocab as u32);
    let config = TrainConfig {
        mode: TrainMode::Lora(LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: LoraTarget::ALL.to_vec(),
        }),
        batch_size: 1,
        max_steps: Some(1),
        checkpoint_every: 0,
        max_length: prompt + response,
        ..TrainConfig::default()
    };
    let example = Example {
        id: "random".into(),
        prompt: p,
        chosen,
        rejected: Some(rejected),
        truncated: false,
    };
    let out = tempfile::tempdir().expect("out");
    let mut trainer = Trainer::new(model, config, vec![example], out.path(), false).expect("trainer");
    let (predicted, _) = trainer.predicted_step_bytes(&trainer.examples()[0]);
    trainer.check_memory().expect("the step is predicted to fit");
    let m = trainer.step_once().expect("step");
    assert!(
        m.loss.is_finite() && m.grad_norm.is_finite() && m.grad_norm > 0.0,
        "{m:?}"
    );
    serde_json::json!({
        "bench": "random_q8_0_orpo_step",
        "shape": {"layers": spec.layers, "hidden": spec.hidden, "intermediate": spec.intermediate,
            "heads": spec.heads, "kv_heads": spec.kv_heads, "head_dim": spec.head_dim, "vocab": spec.vocab},
        "gguf_mib": (std::fs::metadata(&path).expect("size").len() as f64 / 1048576.0).round(),
        "prompt_tokens": prompt, "response_tokens": response,
        "threads": sealong::quant::kernels::threads(),
        "write_s": (write_s * 10.0).round() / 10.0, "load_s": (load_s * 10.0).round() / 10.0,
        "step_s": (m.step_seconds * 10.0).round() / 10.0,
        "loss": m.loss, "grad_norm": m.grad_norm,
        "predicted_mib": (predicted / 1048576.0).round(),
        "peak_rss_step_mib": m.peak_rss_mib.map(f64::round),
    })
}

/// The same step as the 32k benchmark below, on a model small enough for CI (multiples of 32 so
/// every matrix is Q8_0): keeps the generator, the Q8_0 load and the step path working.
#[test]
fn a_random_q8_0_model_trains_one_orpo_step() {
    let spec = TinySpec {
        vocab: 256,
        max_positions: 512,
        ..TinySpec::qwen2().in_whole_blocks()
    };
    let line = random_q8_0_orpo_step(&spec, 300, 32);
    assert!(line["peak_rss_step_mib"].as_f64().is_some_and(|m| m > 1.0), "{line}");
}

/// Issue 14's scale target: a model of Qwen2.5-0.5B's shape (random weights, Q8_0) trains one
/// ORPO step on a 32,768-token prompt on the 2-core, 24 GiB machine. Minutes to an hour: run it
/// with `bash bench/train_qwen_shape.sh`, which records the JSON line in
/// bench/results/random_q8_0_orpo_step.jsonl (BENCHMARKS.md has the table). The prompt length
/// comes from SEALONG_PROMPT_TOKENS (default 32768), the responses from SEALONG_RESPONSE_TOKENS
/// (default 256); the model's context is set to hold both.
#[test]
#[ignore = "a benchmark: minutes to an hour on 2 cores (bench/train_qwen_shape.sh)"]
fn a_qwen25_05b_shaped_q8_0_model_trains_one_orpo_step_on_a_32k_prompt() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (prompt, response) = (
        env("SEALONG_PROMPT_TOKENS", 32_768),
        env("SEALONG_RESPONSE_TOKENS", 256),
    );
    let line = random_q8_0_orpo_step(&TinySpec::qwen25_05b_shape(prompt + response), prompt, response);
    println!("{line}");
    let peak = line["peak_rss_step_mib"].as_f64().expect("peak RSS");
    assert!(peak < 24.0 * 1024.0, "{line}");
}

/// bf16 and f16 safetensors train with their matrices kept 16-bit (the frozen storage-format
/// product widens a row block at a time): a checkpointed LoRA step (with dropout) and a full
/// fine-tuning step (f32 master weights) equal the same steps on an f32 copy of the rounded
/// values, to the module's bounds (loss 1e-5, gradients 1e-4 relative).
#[test]
fn half_precision_weights_train_as_their_f32_values() {
    let spec = TinySpec::llama().in_whole_blocks();
    let weights = tiny::random_weights(&spec, 21);
    let (prompt, chosen, rejected) = pair(37, 6, 9, spec.vocab as u32);
    let responses: [&[u32]; 2] = [&chosen, &rejected];
    for dtype in [safetensors::Dtype::BF16, safetensors::Dtype::F16] {
        for (what, mode) in [("LoRA with dropout", lora(0.1)), ("full fine-tuning", TrainMode::Full)] {
            let step = |dtype: safetensors::Dtype, w: &tiny::Weights| {
                let dir = tempfile::tempdir().expect("tmp");
                tiny::write_hf_dir_as(dir.path(), &spec, w, dtype);
                let path = ModelPath::detect(dir.path()).expect("detect");
                let mut model = Decoder::load(&path, &Device::flex().autodiff()).expect("load");
                if dtype != safetensors::Dtype::F32 && matches!(mode, TrainMode::Lora(_)) {
                    assert!(
                        matches!(&model.layers[0].q_proj.weight, LinearWeight::Quant(_)),
                        "{dtype:?}: q_proj is not kept in its stored format"
                    );
                }
                prepare_training(&mut model, &mode, 3).expect("prepare");
                if matches!(mode, TrainMode::Lora(_)) {
                    perturb_lora_b(&mut model);
                }
                let dropout = matches!(mode, TrainMode::Lora(_)).then_some((5, 7));
                checkpointed_step(&mut model, &prompt, &responses, dropout)
            };
            let half = step(dtype, &weights);
            let f32_copy = step(safetensors::Dtype::F32, &tiny::rounded(&weights, dtype));
            compare(&format!("{dtype:?} weights, {what}"), &f32_copy, &half);
        }
    }
}
