//! The fused, vocabulary-chunked label log-probability (`sealong_shaders::label_logprobs*`,
//! `segment_logprob_sums*`) against its eager twin (`*_reference`), its custom backward against
//! the twin's autodiff and against finite differences, and the ORPO/SFT scalars of core's objective
//! (`sealong::train::orpo`) on those sums.
//!
//! Tolerances (all f32 on device):
//! - forward: per-segment log-prob sums, relative |d| / max(|ref|, 1) <= 1e-5 (flex and wgpu);
//! - gradients wrt `hidden` and `lm_head`, fused vs twin: max |d| / max |ref| <= 1e-4;
//! - finite differences: central differences (h = 1e-5) of an independent f64 host
//!   implementation of the same loss, vs the fused f32 gradient: max |d| / max |fd| <= 1e-4;
//! - ORPO vs a hand-worked pair (values computed in f64 with Python's math module): 1e-6 in
//!   f64, 1e-5 relative in f32;
//! - `log1m_exp` vs the f64 formula over x in [-1e4, -1e-20]: relative 1e-5 plus 1e-6 absolute;
//!   its gradient relative 1e-4 (x <= -1e-4) and finite everywhere.
//!
//! Memory (`fused_vs_eager_memory_flex`, `--ignored`): each path runs in its own child process
//! (this test binary re-run with one `#[ignore]`d child test); the child reports VmHWM (peak
//! resident set) from /proc/self/status and its resident set before the loss; the difference is
//! the loss's own peak. Printed, not asserted (timings never asserted).
//!
//! wgpu runs on Mesa lavapipe where there is no GPU; no adapter is a failure, never a skip.

use std::ops::Range;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::DType;
use sealong::train::orpo::{log1m_exp, log1m_exp_f64, orpo_loss, orpo_stats_f64, sft_loss};
use sealong_shaders::{
    LossError, label_logprobs_chunked, label_logprobs_reference, segment_logprob_sums_chunked,
    segment_logprob_sums_reference,
};
use sealong_tests::{SplitMix as Rng, wgpu_device as gpu};

const FORWARD_TOL: f64 = 1e-5;
const GRAD_TOL: f64 = 1e-4;
const FD_TOL: f64 = 1e-4;
/// log1m_exp: relative 1e-5 plus 1e-6 absolute (GPU `log`/`log1p` near 1 are accurate to about
/// 2^-21 absolute, which is what the log odds see).
const LOG1M_REL: f64 = 1e-5;
const LOG1M_ABS: f64 = 1e-6;

/// A random problem: hidden `[T, H]`, lm_head `[V, H]`, labels, and pair segments.
struct Case {
    t: usize,
    h: usize,
    v: usize,
    hidden: Vec<f32>,
    lm_head: Vec<f32>,
    labels: Vec<u32>,
    segments: Vec<Range<usize>>,
}

impl Case {
    /// `lengths` alternate chosen, rejected.
    fn new(seed: u64, lengths: &[usize], h: usize, v: usize) -> Self {
        let mut rng = Rng(seed);
        let t: usize = lengths.iter().sum();
        let mut segments = Vec::new();
        let mut start = 0;
        for &n in lengths {
            segments.push(start..start + n);
            start += n;
        }
        // Logits of order a few units, like a trained LM head's.
        let hidden = rng.vec(t * h, 1.0);
        let lm_head = rng.vec(v * h, 3.0 / (h as f32).sqrt());
        let labels = (0..t).map(|_| rng.below(v) as u32).collect();
        Self {
            t,
            h,
            v,
            hidden,
            lm_head,
            labels,
            segments,
        }
    }

    fn lengths(&self) -> Vec<usize> {
        self.segments.iter().map(|r| r.len()).collect()
    }

    fn tensors(&self, device: &Device) -> (Tensor<2>, Tensor<2>) {
        (
            Tensor::<2>::from_data(
                TensorData::new(self.hidden.clone(), [self.t, self.h]),
                (device, DType::F32),
            ),
            Tensor::<2>::from_data(
                TensorData::new(self.lm_head.clone(), [self.v, self.h]),
                (device, DType::F32),
            ),
        )
    }
}

fn host(t: Tensor<1>) -> Vec<f64> {
    t.into_data().iter::<f32>().map(f64::from).collect()
}

fn host2(t: Tensor<2>) -> Vec<f64> {
    t.into_data().iter::<f32>().map(f64::from).collect()
}

/// max |a - b| / max(max |b|, floor).
fn rel(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(floor, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check_forward(device: &Device, name: &str) {
    for (seed, lengths, h, v, chunks) in [
        (1u64, vec![5usize, 3], 16usize, 50usize, vec![1usize, 7, 16, 50, 4096]),
        (2, vec![9, 11, 4, 6], 32, 300, vec![64, 128, 299]),
        (3, vec![64, 64], 64, 2000, vec![512, 8192]),
    ] {
        let case = Case::new(seed, &lengths, h, v);
        let (hidden, lm_head) = case.tensors(device);
        let twin = host(
            segment_logprob_sums_reference(hidden.clone(), lm_head.clone(), &case.labels, &case.segments)
                .expect("valid test input"),
        );
        let twin_rows =
            host(label_logprobs_reference(hidden.clone(), lm_head.clone(), &case.labels).expect("valid test input"));
        for chunk in chunks {
            let fused = host(
                segment_logprob_sums_chunked(hidden.clone(), lm_head.clone(), &case.labels, &case.segments, chunk)
                    .expect("valid test input"),
            );
            let rows = host(
                label_logprobs_chunked(hidden.clone(), lm_head.clone(), &case.labels, chunk).expect("valid test input"),
            );
            for (s, (f, r)) in fused.iter().zip(&twin).enumerate() {
                let d = (f - r).abs() / r.abs().max(1.0);
                assert!(
                    d <= FORWARD_TOL,
                    "{name} seed {seed} chunk {chunk} segment {s}: fused {f} twin {r} (rel {d:e})"
                );
            }
            let d = rel(&rows, &twin_rows, 1.0);
            assert!(
                d <= FORWARD_TOL,
                "{name} seed {seed} chunk {chunk}: per-row logp rel {d:e}"
            );
        }
    }
}

#[test]
fn forward_fused_matches_twin_flex() {
    check_forward(&Device::flex(), "flex");
}

#[test]
fn forward_fused_matches_twin_wgpu() {
    check_forward(&gpu(), "wgpu");
}

/// ORPO loss through the fused path (chunk) or the twin (None); returns the loss, d hidden and
/// d lm_head.
fn orpo_grads(
    case: &Case,
    device: &Device,
    chunk: Option<usize>,
    lm_head_grad: bool,
) -> (f64, Vec<f64>, Option<Vec<f64>>) {
    let device = device.clone().autodiff();
    let (hidden, lm_head) = case.tensors(&device);
    let hidden = hidden.require_grad();
    let lm_head = if lm_head_grad { lm_head.require_grad() } else { lm_head };
    let sums = match chunk {
        Some(c) => segment_logprob_sums_chunked(hidden.clone(), lm_head.clone(), &case.labels, &case.segments, c),
        None => segment_logprob_sums_reference(hidden.clone(), lm_head.clone(), &case.labels, &case.segments),
    }
    .expect("valid test input");
    let out = orpo_loss(sums, &case.lengths(), 0.1).expect("valid test input");
    let loss = out.loss.clone();
    let value = host(loss.clone().detach())[0];
    let grads = loss.backward();
    let gh = host2(hidden.grad(&grads).expect("hidden has a gradient"));
    let gw = lm_head_grad.then(|| host2(lm_head.grad(&grads).expect("lm_head has a gradient")));
    (value, gh, gw)
}

fn check_grads(device: &Device, name: &str) {
    for (seed, lengths, h, v, chunk) in [
        (11u64, vec![5usize, 3], 16usize, 50usize, 16usize),
        (12, vec![9, 11, 4, 6], 32, 300, 128),
        (13, vec![40, 24], 64, 1000, 256),
    ] {
        let case = Case::new(seed, &lengths, h, v);
        for lm_head_grad in [true, false] {
            let (lf, ghf, gwf) = orpo_grads(&case, device, Some(chunk), lm_head_grad);
            let (lr, ghr, gwr) = orpo_grads(&case, device, None, lm_head_grad);
            assert!(
                (lf - lr).abs() / lr.abs().max(1.0) <= FORWARD_TOL,
                "{name} seed {seed}: loss {lf} vs {lr}"
            );
            let d = rel(&ghf, &ghr, 1e-12);
            assert!(d <= GRAD_TOL, "{name} seed {seed}: d hidden rel {d:e}");
            if let (Some(gwf), Some(gwr)) = (gwf, gwr) {
                let d = rel(&gwf, &gwr, 1e-12);
                assert!(d <= GRAD_TOL, "{name} seed {seed}: d lm_head rel {d:e}");
            }
        }
    }
}

#[test]
fn gradients_fused_match_twin_flex() {
    check_grads(&Device::flex(), "flex");
}

#[test]
fn gradients_fused_match_twin_wgpu() {
    check_grads(&gpu(), "wgpu");
}

/// The ORPO loss of the case, in f64 on the host, from explicit hidden / lm_head values.
fn host_orpo_loss(case: &Case, hidden: &[f64], lm_head: &[f64]) -> f64 {
    let (t, h, v) = (case.t, case.h, case.v);
    let mut logp = vec![0.0f64; t];
    for r in 0..t {
        let z: Vec<f64> = (0..v)
            .map(|c| (0..h).map(|k| hidden[r * h + k] * lm_head[c * h + k]).sum())
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        logp[r] = z[case.labels[r] as usize] - lse;
    }
    let sums: Vec<f64> = case.segments.iter().map(|s| logp[s.clone()].iter().sum()).collect();
    orpo_stats_f64(&sums, &case.lengths(), 0.1)
        .expect("valid test input")
        .loss
}

#[test]
fn gradients_fused_match_finite_differences() {
    // Tiny: 2 pairs, T = 7, H = 4, V = 9, chunks of 4 (three chunks, the last of 1).
    let case = Case::new(21, &[2, 1, 3, 1], 4, 9);
    let (loss, gh, gw) = orpo_grads(&case, &Device::flex(), Some(4), true);
    let gw = gw.expect("lm_head was asked for its gradient");
    let hidden: Vec<f64> = case.hidden.iter().map(|&x| f64::from(x)).collect();
    let lm_head: Vec<f64> = case.lm_head.iter().map(|&x| f64::from(x)).collect();
    let base = host_orpo_loss(&case, &hidden, &lm_head);
    assert!(
        (loss - base).abs() <= 1e-5 * base.abs().max(1.0),
        "fused loss {loss} vs f64 {base}"
    );
    let step = 1e-5;
    let fd = |which: usize, i: usize| {
        let (mut hp, mut wp) = (hidden.clone(), lm_head.clone());
        let (mut hm, mut wm) = (hidden.clone(), lm_head.clone());
        if which == 0 {
            hp[i] += step;
            hm[i] -= step;
        } else {
            wp[i] += step;
            wm[i] -= step;
        }
        (host_orpo_loss(&case, &hp, &wp) - host_orpo_loss(&case, &hm, &wm)) / (2.0 * step)
    };
    let fd_h: Vec<f64> = (0..hidden.len()).map(|i| fd(0, i)).collect();
    let fd_w: Vec<f64> = (0..lm_head.len()).map(|i| fd(1, i)).collect();
    let dh = rel(&gh, &fd_h, 1e-12);
    let dw = rel(&gw, &fd_w, 1e-12);
    assert!(dh <= FD_TOL, "d hidden vs finite differences: rel {dh:e}");
    assert!(dw <= FD_TOL, "d lm_head vs finite differences: rel {dw:e}");
}

#[test]
fn orpo_hand_worked_pair() {
    // One pair: chosen 2 tokens summing to -1 (lp_w = -0.5), rejected 4 tokens summing to -4
    // (lp_l = -1). By hand (f64):
    // log1p(-exp(-0.5)) = ln(1 - 0.6065307) = -0.9327521295671886
    // log1p(-exp(-1.0)) = ln(1 - 0.3678794) = -0.45867514538708193
    // log_odds = 0.5 - (-0.93275213 + 0.45867515) = 0.9740769841801067
    // log_sigmoid(log_odds) = -ln(1 + exp(-0.97407698)) = -0.3202997852375365
    // loss = NLL - 0.1 * log_sigmoid = 0.5 + 0.03202998 = 0.5320299785237537
    let sums = [-1.0, -4.0];
    let lengths = [2, 4];
    let s = orpo_stats_f64(&sums, &lengths, 0.1).expect("valid test input");
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1.0);
    assert!(close(s.log_odds, 0.974_076_984_180_106_7, 1e-12), "{s:?}");
    assert!(close(s.loss, 0.532_029_978_523_753_7, 1e-12), "{s:?}");
    assert!(close(s.nll, 0.5, 1e-12) && close(s.chosen_reward, -0.05, 1e-12) && close(s.rejected_reward, -0.1, 1e-12));
    assert!(close(s.margin, 0.05, 1e-12) && s.reward_accuracy == 1.0);

    for device in [Device::flex(), gpu()] {
        let t = Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, -4.0], [2]), (&device, DType::F32));
        let out = orpo_loss(t.clone(), &lengths, 0.1).expect("valid test input").stats();
        for (a, b) in [
            (out.loss, s.loss),
            (out.nll, s.nll),
            (out.log_odds, s.log_odds),
            (out.chosen_reward, s.chosen_reward),
            (out.rejected_reward, s.rejected_reward),
            (out.margin, s.margin),
            (out.reward_accuracy, s.reward_accuracy),
        ] {
            assert!(close(a, b, 1e-5), "{device:?}: {out:?} vs {s:?}");
        }
        let sft = host(sft_loss(t.narrow(0, 0, 1), &lengths[..1]).expect("valid test input"))[0];
        assert!(close(sft, 0.5, 1e-6), "SFT {sft}");
    }

    // A batch of two pairs: NLL is the token mean over both chosen responses, the rest means.
    let b = orpo_stats_f64(&[-1.0, -4.0, -3.0, -1.0], &[2, 4, 1, 1], 0.1).expect("valid test input");
    assert!(close(b.nll, 4.0 / 3.0, 1e-12) && b.reward_accuracy == 0.5, "{b:?}");
}

#[test]
fn log1m_exp_is_stable() {
    let xs: Vec<f64> = vec![
        -1e-20,
        -1e-10,
        -1e-7,
        -1e-4,
        -0.01,
        -0.3,
        -0.69,
        -std::f64::consts::LN_2,
        -0.7,
        -1.0,
        -5.0,
        -30.0,
        -90.0,
        -100.0,
        -1e4,
    ];
    let expect: Vec<f64> = xs.iter().map(|&x| log1m_exp_f64(f64::from(x as f32))).collect();
    // The f64 formula itself at the ends: log(1 - e^x) ~ log(-x) near 0, ~ -e^x far below.
    assert!((log1m_exp_f64(-1e-20) - (1e-20f64).ln()).abs() < 1e-12);
    assert!((log1m_exp_f64(-50.0) + (-50.0f64).exp()).abs() < 1e-30);
    for device in [Device::flex(), gpu()] {
        let device = device.autodiff();
        let x = Tensor::<1>::from_data(
            TensorData::new(xs.iter().map(|&x| x as f32).collect::<Vec<_>>(), [xs.len()]),
            (&device, DType::F32),
        )
        .require_grad();
        let y = log1m_exp(x.clone());
        let got = host(y.clone().detach());
        for ((&x, &g), &e) in xs.iter().zip(&got).zip(&expect) {
            let d = (g - e).abs();
            assert!(
                d <= LOG1M_REL * e.abs() + LOG1M_ABS,
                "{device:?}: log1m_exp({x}) = {g}, expected {e} (|d| {d:e})"
            );
        }
        // d/dx log(1 - e^x) = -1/expm1(-x): finite everywhere, no NaN leaking from the branch
        // not taken.
        let grads = y.sum().backward();
        let g = host(x.grad(&grads).expect("x has a gradient"));
        for (&x, &g) in xs.iter().zip(&g) {
            let xf = f64::from(x as f32);
            assert!(g.is_finite(), "{device:?}: gradient at {x} is {g}");
            if xf <= -1e-4 {
                let e = -1.0 / (-xf).exp_m1();
                let d = (g - e).abs() / e.abs().max(1e-30);
                assert!(
                    d <= 1e-4 || (g - e).abs() <= 1e-37,
                    "{device:?}: gradient at {x}: {g} vs {e}"
                );
            }
        }
    }
}

#[test]
fn bad_inputs_are_refused() {
    let device = Device::flex();
    let case = Case::new(31, &[2, 2], 4, 5);
    let (hidden, lm_head) = case.tensors(&device);
    let mut labels = case.labels.clone();
    labels[3] = 5;
    assert!(matches!(
        label_logprobs_chunked(hidden.clone(), lm_head.clone(), &labels, 2),
        Err(LossError::LabelOutOfRange {
            position: 3,
            label: 5,
            vocab: 5
        })
    ));
    assert!(matches!(
        label_logprobs_chunked(hidden.clone(), lm_head.clone(), &labels[..3], 2),
        Err(LossError::LabelCount { rows: 4, labels: 3 })
    ));
    assert!(matches!(
        segment_logprob_sums_chunked(hidden.clone(), lm_head.clone(), &case.labels, &[0..5, 0..1], 2),
        Err(LossError::Segment { index: 0, .. })
    ));
    let sums = Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, -2.0, -3.0], [3]), (&device, DType::F32));
    assert!(matches!(
        orpo_loss(sums.clone(), &[1, 1, 1], 0.1),
        Err(sealong::Error::Invalid(m)) if m.starts_with("ORPO: segments must alternate")
    ));
    assert!(matches!(
        orpo_loss(sums.narrow(0, 0, 2), &[1, 0], 0.1),
        Err(sealong::Error::Invalid(m)) if m == "ORPO: segment 1 has no response tokens"
    ));
}

// ---- memory -------------------------------------------------------------------------------

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_hwm_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MEM_ENV: &str = "SEALONG_LOSS_MEMORY_MODE";

/// The child: one loss forward + backward (gradient wrt hidden; lm_head frozen, as under LoRA,
/// or also wrt lm_head with mode suffix `+w`) at V = 49,152, H = 576, T = 512 + 512 on flex.
/// Prints `MEMORY mode base_kib peak_kib seconds loss`.
#[test]
#[ignore = "child process of fused_vs_eager_memory_flex"]
fn memory_child() {
    let Ok(mode) = std::env::var(MEM_ENV) else {
        return;
    };
    let (v, h) = (49_152, 576);
    let case_lengths = [512usize, 512];
    let t = 1024;
    let mut rng = Rng(41);
    let device = Device::flex().autodiff();
    let hidden =
        Tensor::<2>::from_data(TensorData::new(rng.vec(t * h, 1.0), [t, h]), (&device, DType::F32)).require_grad();
    let lm_head = Tensor::<2>::from_data(TensorData::new(rng.vec(v * h, 0.1), [v, h]), (&device, DType::F32));
    let lm_head = if mode.ends_with("+w") {
        lm_head.require_grad()
    } else {
        lm_head
    };
    let labels: Vec<u32> = (0..t).map(|_| rng.below(v) as u32).collect();
    let segments = [0..512, 512..1024];
    let (base, _) = rss_hwm_kib();
    let start = Instant::now();
    let sums = if mode.starts_with("fused") {
        segment_logprob_sums_chunked(hidden.clone(), lm_head.clone(), &labels, &segments, 8192)
    } else {
        segment_logprob_sums_reference(hidden.clone(), lm_head.clone(), &labels, &segments)
    }
    .expect("valid test input");
    let out = orpo_loss(sums, &case_lengths, 0.1).expect("valid test input");
    let loss = host(out.loss.clone().detach())[0];
    let grads = out.loss.backward();
    let gh = hidden
        .grad(&grads)
        .expect("hidden has a gradient")
        .sum()
        .into_scalar::<f32>();
    let gw = lm_head.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
    let seconds = start.elapsed().as_secs_f64();
    let (_, peak) = rss_hwm_kib();
    println!("MEMORY {mode} {base} {peak} {seconds:.3} {loss} {gh} {gw:?}");
}

fn run_child(mode: &str) -> (f64, f64, f64) {
    let out = sealong_tests::child_test(module_path!(), "memory_child")
        .env(MEM_ENV, mode)
        .output()
        .expect("spawn the memory child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {mode} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("MEMORY ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("child {mode}: {stdout}"));
    println!("{line}");
    let f: Vec<&str> = line.split_whitespace().collect();
    let base: f64 = f[2].parse().expect("child base kib");
    let peak: f64 = f[3].parse().expect("child peak kib");
    (base / 1024.0, peak / 1024.0, f[4].parse().expect("child seconds"))
}

#[test]
#[ignore = "memory/time measurement at V = 49,152 (slow); run with --ignored --nocapture"]
fn fused_vs_eager_memory_flex() {
    for suffix in ["", "+w"] {
        let (eb, ep, et) = run_child(&format!("eager{suffix}"));
        let (fb, fp, ft) = run_child(&format!("fused{suffix}"));
        let (ed, fd) = (ep - eb, fp - fb);
        println!(
            "loss fwd+bwd, V=49152 H=576 T=512+512, flex, grad wrt hidden{}: eager peak {ep:.0} MiB \
             (+{ed:.0} over {eb:.0} before the loss), {et:.2} s; fused (chunk 8192) peak {fp:.0} MiB \
             (+{fd:.0} over {fb:.0}), {ft:.2} s; loss-own peak ratio fused/eager {:.3}, whole-process {:.3}, \
             time ratio {:.3}",
            if suffix.is_empty() { "" } else { " and lm_head" },
            fd / ed,
            fp / ep,
            ft / et
        );
    }
}

/// Wall time of one loss forward + backward (grad wrt hidden) at V = 49,152, H = 576,
/// T = 512 + 512 on the wgpu device, eager twin vs fused (chunk 8192): one warm-up, then the
/// median of 5, each ended by reading the gradient's sum (a device sync). Printed, not asserted.
/// Meant for a real GPU (lavapipe takes minutes).
#[test]
#[ignore = "GPU timing at V = 49,152; run with --ignored --nocapture on a machine with a GPU"]
fn fused_vs_eager_time_wgpu() {
    let (v, h, t) = (49_152, 576, 1024);
    let mut rng = Rng(51);
    let device = gpu().autodiff();
    let hidden_data = TensorData::new(rng.vec(t * h, 1.0), [t, h]);
    let lm_head = Tensor::<2>::from_data(TensorData::new(rng.vec(v * h, 0.1), [v, h]), (&device, DType::F32));
    let labels: Vec<u32> = (0..t).map(|_| rng.below(v) as u32).collect();
    let segments = [0..512, 512..1024];
    let mut results = Vec::new();
    for fused in [false, true] {
        let mut times = Vec::new();
        for _ in 0..6 {
            let hidden = Tensor::<2>::from_data(hidden_data.clone(), (&device, DType::F32)).require_grad();
            let start = Instant::now();
            let sums = if fused {
                segment_logprob_sums_chunked(hidden.clone(), lm_head.clone(), &labels, &segments, 8192)
            } else {
                segment_logprob_sums_reference(hidden.clone(), lm_head.clone(), &labels, &segments)
            }
            .expect("valid test input");
            let out = orpo_loss(sums, &[512, 512], 0.1).expect("valid test input");
            let grads = out.loss.backward();
            let g = hidden
                .grad(&grads)
                .expect("hidden has a gradient")
                .sum()
                .into_scalar::<f32>();
            assert!(g.is_finite());
            times.push(start.elapsed().as_secs_f64());
        }
        let mut timed = times[1..].to_vec();
        timed.sort_by(f64::total_cmp);
        results.push(timed[timed.len() / 2]);
    }
    println!(
        "loss fwd+bwd on {:?}, V=49152 H=576 T=512+512, grad wrt hidden: eager {:.4} s, fused {:.4} s, ratio {:.3}",
        gpu(),
        results[0],
        results[1],
        results[1] / results[0]
    );
}
