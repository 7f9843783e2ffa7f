//! SFT and ORPO (XTuner's form, SEALONG.md "ORPO loss") from per-segment log-prob sums.
//!
//! Segments come in pairs: segment `2i` is pair `i`'s chosen response `y_w`, segment `2i + 1`
//! its rejected one `y_l`. With `lp = sum / length` (token-mean log-probability):
//! - `log_odds_i = (lp_w − lp_l) − (log1p(−exp(lp_w)) − log1p(−exp(lp_l)))`,
//! - `NLL = −Σ_i sum_w,i / Σ_i len_w,i` (token mean over all chosen tokens of the batch; for one
//!   pair, exactly `−lp_w`),
//! - `L = NLL − beta · mean_i log_sigmoid(log_odds_i)`,
//! - logged: chosen/rejected rewards `beta · lp`, reward accuracy `mean[beta·lp_w > beta·lp_l]`,
//!   margin `mean(beta·lp_w − beta·lp_l)`, log odds (mean), NLL.
//!
//! This is the objective: a formula on log-prob sums, the one home of ORPO (and of its
//! [`DEFAULT_BETA`]). The sums come from the shaders crate's fused, vocabulary-chunked kernels
//! (or their reference twin), which know nothing of pairs or rewards.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::log_sigmoid;

use crate::error::{Error, Result};

/// ORPO's beta (XTuner's and SEALONG's default): `TrainConfig::default`, the CLI's `--beta`
/// help and the docs all read this one constant.
pub const DEFAULT_BETA: f64 = 0.1;

/// Bad segment sums or lengths, as [`Error::Invalid`] (the trainer prefixes the example).
fn pairs_error(reason: String) -> Error {
    Error::Invalid(format!("ORPO: {reason}"))
}

/// `ln 2`, where [`log1m_exp`] switches formula.
const LN_2: f32 = std::f32::consts::LN_2;

/// Largest argument [`log1m_exp`] uses: `log1p(−exp(0))` is `−inf`, so `x` is clamped to at most
/// this (`log1m_exp(−1e-30) ≈ −69.1`). A token-mean log-probability this close to 0 only
/// arises when every response token has probability 1 to f32 precision.
pub const LOG1M_EXP_MAX_ARG: f32 = -1e-30;

/// `log(1 − exp(x))` for `x < 0`, stable at both ends (Mächler's switch at `−ln 2`):
/// `log1p(−exp(x))` for `x < −ln 2`, `log(−expm1(x))` above. burn has no `expm1`, and
/// `exp(x) − 1` or Kahan's `(u − 1)·x / log(u)` lose everything near 0 on GPUs, whose `exp`/`log`
/// near 1 are only accurate to about 2⁻²¹ absolute (Vulkan's precision rules; measured on
/// lavapipe). So `expm1` on `[−ln 2, 0]` is its Taylor series to degree 11 in Horner form (mul and
/// add only: relative truncation error `ln2¹¹/11! < 5e-10`), exact to f32 rounding on every
/// backend. The result is then accurate to ~1e-6 absolute everywhere (what the log odds need)
/// and to f32 rounding relatively on the CPU. Each branch only sees arguments from its own side
/// of `−ln 2`, so neither produces an inf/NaN whose gradient could leak through the selection.
/// Differentiable; `x` is clamped to at most [`LOG1M_EXP_MAX_ARG`].
pub fn log1m_exp(x: Tensor<1>) -> Tensor<1> {
    let x = x.clamp_max(LOG1M_EXP_MAX_ARG);
    let use_log1p = x.clone().lower_elem(-LN_2);

    let xa = x.clone().clamp_max(-LN_2);
    let a = xa.exp().neg().log1p();

    // expm1(x) = x·(1 + x/2·(1 + x/3·(1 + … (1 + x/11)))).
    let xb = x.clamp_min(-LN_2);
    let mut r = xb.clone().div_scalar(11.0).add_scalar(1.0);
    for k in (2..=10).rev() {
        r = r.mul(xb.clone()).div_scalar(k as f32).add_scalar(1.0);
    }
    let b = r.mul(xb).neg().log();

    b.mask_where(use_log1p, a)
}

/// `log(1 − exp(x))` in f64 for `x < 0`, with the same switch (the host twin of [`log1m_exp`]).
pub fn log1m_exp_f64(x: f64) -> f64 {
    if x < -std::f64::consts::LN_2 {
        (-x.exp()).ln_1p()
    } else {
        (-x.exp_m1()).ln()
    }
}

/// SFT: the token-mean NLL over all given segments, `−Σ sums / Σ lengths` (`[1]`, tracked when
/// `sums` is). Pass the chosen responses' segments only.
pub fn sft_loss(sums: Tensor<1>, lengths: &[usize]) -> Result<Tensor<1>> {
    let [n] = sums.dims();
    if n != lengths.len() || n == 0 {
        return Err(pairs_error(format!(
            "SFT needs one length per segment sum and at least one segment ({n} sums, {} lengths)",
            lengths.len()
        )));
    }
    let tokens: usize = lengths.iter().sum();
    if tokens == 0 {
        return Err(pairs_error("SFT segments hold no tokens".into()));
    }
    Ok(sums.sum().neg().div_scalar(tokens as f32))
}

/// What [`orpo_loss`] returns: the loss and the per-pair quantities, as tensors.
#[derive(Debug, Clone)]
pub struct OrpoOutput {
    /// `[1]`: `NLL − beta · mean log_sigmoid(log_odds)`; tracked when the sums are.
    pub loss: Tensor<1>,
    /// `[1]`: token-mean NLL over the chosen responses.
    pub nll: Tensor<1>,
    /// `[P]`: token-mean log-probability of each chosen response.
    pub lp_chosen: Tensor<1>,
    /// `[P]`: token-mean log-probability of each rejected response.
    pub lp_rejected: Tensor<1>,
    /// `[P]`: the log odds ratio of each pair.
    pub log_odds: Tensor<1>,
    /// The `beta` used.
    pub beta: f32,
}

/// The logged ORPO quantities, batch means, on the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrpoStats {
    /// The loss.
    pub loss: f64,
    /// Token-mean NLL of the chosen responses.
    pub nll: f64,
    /// Mean `lp_w`.
    pub lp_chosen: f64,
    /// Mean `lp_l`.
    pub lp_rejected: f64,
    /// Mean `beta · lp_w`.
    pub chosen_reward: f64,
    /// Mean `beta · lp_l`.
    pub rejected_reward: f64,
    /// Fraction of pairs with `beta · lp_w > beta · lp_l`.
    pub reward_accuracy: f64,
    /// Mean `beta · (lp_w − lp_l)`.
    pub margin: f64,
    /// Mean log odds.
    pub log_odds: f64,
}

fn host(t: &Tensor<1>) -> Vec<f64> {
    t.clone().detach().into_data().iter::<f32>().map(f64::from).collect()
}

impl OrpoOutput {
    /// Reads the logged quantities back (one sync with the device).
    pub fn stats(&self) -> OrpoStats {
        let loss = host(&self.loss)[0];
        let nll = host(&self.nll)[0];
        let w = host(&self.lp_chosen);
        let l = host(&self.lp_rejected);
        let odds = host(&self.log_odds);
        stats_from(loss, nll, &w, &l, &odds, f64::from(self.beta))
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn stats_from(loss: f64, nll: f64, w: &[f64], l: &[f64], odds: &[f64], beta: f64) -> OrpoStats {
    let wins = w.iter().zip(l).filter(|(a, b)| beta * **a > beta * **b).count();
    OrpoStats {
        loss,
        nll,
        lp_chosen: mean(w),
        lp_rejected: mean(l),
        chosen_reward: beta * mean(w),
        rejected_reward: beta * mean(l),
        reward_accuracy: wins as f64 / w.len() as f64,
        margin: mean(&w.iter().zip(l).map(|(a, b)| beta * a - beta * b).collect::<Vec<_>>()),
        log_odds: mean(odds),
    }
}

fn check_pairs(n_sums: usize, lengths: &[usize]) -> Result<usize> {
    if n_sums != lengths.len() {
        return Err(pairs_error(format!(
            "{n_sums} segment sums but {} lengths",
            lengths.len()
        )));
    }
    if n_sums == 0 || !n_sums.is_multiple_of(2) {
        return Err(pairs_error(format!(
            "segments must alternate chosen, rejected (an even, non-zero count), got {n_sums}"
        )));
    }
    if let Some(i) = lengths.iter().position(|&n| n == 0) {
        return Err(pairs_error(format!("segment {i} has no response tokens")));
    }
    Ok(n_sums / 2)
}

/// ORPO from per-segment log-prob sums (`[2P]`, chosen/rejected alternating) and their token
/// counts; see the module docs. Differentiable through `sums`.
pub fn orpo_loss(sums: Tensor<1>, lengths: &[usize], beta: f32) -> Result<OrpoOutput> {
    let [n] = sums.dims();
    let p = check_pairs(n, lengths)?;
    let device = sums.device();
    let lens: Vec<f32> = lengths.iter().map(|&l| l as f32).collect();
    let lens = Tensor::<1>::from_data(TensorData::new(lens, [n]), (&device, DType::F32));
    let chosen_tokens: usize = lengths.iter().step_by(2).sum();

    let pairs = sums.reshape([p, 2]);
    let chosen_sum = pairs.clone().slice([0..p, 0..1]).sum();
    let nll = chosen_sum.neg().div_scalar(chosen_tokens as f32);

    let lp = pairs.div(lens.reshape([p, 2]));
    let lp_w = lp.clone().slice([0..p, 0..1]).reshape([p]);
    let lp_l = lp.slice([0..p, 1..2]).reshape([p]);
    let log_odds = (lp_w.clone() - lp_l.clone()) - (log1m_exp(lp_w.clone()) - log1m_exp(lp_l.clone()));
    let loss = nll.clone() - log_sigmoid(log_odds.clone()).mean().mul_scalar(beta);

    Ok(OrpoOutput {
        loss,
        nll,
        lp_chosen: lp_w,
        lp_rejected: lp_l,
        log_odds,
        beta,
    })
}

/// [`orpo_loss`]'s quantities computed on the host in f64 (the hand-checkable twin).
pub fn orpo_stats_f64(sums: &[f64], lengths: &[usize], beta: f64) -> Result<OrpoStats> {
    let p = check_pairs(sums.len(), lengths)?;
    let chosen_tokens: usize = lengths.iter().step_by(2).sum();
    let nll = -(0..p).map(|i| sums[2 * i]).sum::<f64>() / chosen_tokens as f64;
    let w: Vec<f64> = (0..p).map(|i| sums[2 * i] / lengths[2 * i] as f64).collect();
    let l: Vec<f64> = (0..p).map(|i| sums[2 * i + 1] / lengths[2 * i + 1] as f64).collect();
    let odds: Vec<f64> = w
        .iter()
        .zip(&l)
        .map(|(&a, &b)| (a - b) - (log1m_exp_f64(a) - log1m_exp_f64(b)))
        .collect();
    // log_sigmoid(x) = −softplus(−x), stably.
    let log_sig = |x: f64| {
        if x >= 0.0 {
            -(-x).exp().ln_1p()
        } else {
            x - x.exp().ln_1p()
        }
    };
    let loss = nll - beta * mean(&odds.iter().map(|&x| log_sig(x)).collect::<Vec<_>>());
    Ok(stats_from(loss, nll, &w, &l, &odds, beta))
}
