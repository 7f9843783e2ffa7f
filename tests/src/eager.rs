//! The eager SFT/ORPO path in plain burn ops, the yardstick of the trainer's fused one (moved here
//! from core, whose trainer never runs it): per-token log-probabilities of the response tokens of
//! full-sequence forwards, their length-normalized means, and ORPO in XTuner's form (SEALONG.md;
//! the formula itself lives once, in `sealong::train::orpo::orpo_loss`):
//!
//! ```text
//! lp(y)    = mean over response tokens t of log_softmax(logits[t-1])[y_t]
//! log_odds = (lp_w - lp_l) - (log1p(-exp(lp_w)) - log1p(-exp(lp_l)))
//! L_ORPO   = NLL_w - beta * mean(log_sigmoid(log_odds))      NLL_w = token mean over chosen
//! L_SFT    = NLL_w
//! ```
//!
//! Only the response positions go through the output head, so no `[seq_len, vocab]` logits of
//! the prompt are ever made.

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax};

use sealong::error::{Error, Result};
use sealong::models::decoder::Decoder;
use sealong::train::batch::{Tokenized, TokenizedPair};
use sealong::train::loss::ResponseHidden;

/// `log_softmax(logits)[target]` per row.
///
/// # Shapes
/// `logits`: `[n, vocab]`, `targets`: `[n]` -> `[n]`.
pub fn token_logps(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    log_softmax(logits, 1).gather(1, targets.reshape([n, 1])).reshape([n])
}

/// [`token_logps`] of `hidden W^T`: the signature a fused kernel that never keeps the
/// `[n, vocab]` logits takes (this twin does keep them).
///
/// # Shapes
/// `hidden`: `[n, d]`, `weight`: `[vocab, d]`, `targets`: `[n]` -> `[n]`.
pub fn linear_token_logps(hidden: Tensor<2>, weight: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    token_logps(hidden.matmul(weight.transpose()), targets)
}

/// [`linear_token_logps`] with host labels (the fused kernel's argument form).
///
/// # Shapes
/// `hidden`: `[n, d]`, `lm_head`: `[vocab, d]`, `labels`: `n` ids -> `[n]`.
pub fn label_logprobs(hidden: Tensor<2>, lm_head: Tensor<2>, labels: &[u32]) -> Result<Tensor<1>> {
    let [n, _] = hidden.dims();
    let vocab = lm_head.dims()[0];
    if labels.len() != n {
        return Err(Error::Invalid(format!("{} labels for {n} hidden rows", labels.len())));
    }
    if let Some(bad) = labels.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Invalid(format!(
            "label {bad} is outside the vocabulary ({vocab})"
        )));
    }
    let targets: Vec<i32> = labels.iter().map(|&t| t as i32).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &hidden.device());
    Ok(linear_token_logps(hidden, lm_head, targets))
}

/// Per-token log-probabilities of the response tokens of a batch of sequences.
#[derive(Debug, Clone)]
pub struct SequenceLogps {
    /// All rows' response tokens, row after row.
    ///
    /// # Shapes
    /// `[total response tokens]`.
    pub token_logps: Tensor<1>,
    /// Response tokens per row.
    pub counts: Vec<usize>,
}

impl SequenceLogps {
    /// `[rows, total]` with `scale(row)` on each row's own tokens.
    fn segment_matrix(&self, scale: impl Fn(usize) -> f32) -> Tensor<2> {
        let total: usize = self.counts.iter().sum();
        let rows = self.counts.len();
        let mut m = vec![0.0f32; rows * total];
        let mut start = 0;
        for (r, &c) in self.counts.iter().enumerate() {
            m[r * total + start..r * total + start + c].fill(scale(c));
            start += c;
        }
        Tensor::from_data(TensorData::new(m, [rows, total]), &self.token_logps.device())
    }

    /// Length-normalized log-probability of each row (`lp`).
    ///
    /// # Shapes
    /// `[rows]`.
    pub fn mean(&self) -> Tensor<1> {
        let total: usize = self.counts.iter().sum();
        let m = self.segment_matrix(|c| 1.0 / c as f32);
        m.matmul(self.token_logps.clone().reshape([total, 1]))
            .reshape([self.counts.len()])
    }

    /// Summed log-probability of each row.
    ///
    /// # Shapes
    /// `[rows]`.
    pub fn sum(&self) -> Tensor<1> {
        let total: usize = self.counts.iter().sum();
        let m = self.segment_matrix(|_| 1.0);
        m.matmul(self.token_logps.clone().reshape([total, 1]))
            .reshape([self.counts.len()])
    }

    /// Token-mean negative log-likelihood over every response token of the batch (PyTorch's
    /// `CrossEntropyLoss` with `ignore_index`, as XTuner computes the NLL term).
    ///
    /// # Shapes
    /// `[1]`.
    pub fn nll(&self) -> Tensor<1> {
        let total: usize = self.counts.iter().sum();
        self.token_logps.clone().sum().neg() / total as f64
    }
}

/// Runs `rows` through the decoder in one batch (right-padded: with causal attention a row's
/// real positions never see its padding, so padding changes nothing) and keeps the hidden
/// states of the positions that predict a response token (position `t - 1` for token `t`).
pub fn response_hidden(decoder: &Decoder, rows: &[&Tokenized]) -> Result<ResponseHidden> {
    if rows.is_empty() {
        return Err(Error::Invalid("an empty batch has no loss".into()));
    }
    let max_len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let padded: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| {
            let mut ids = r.ids.clone();
            ids.resize(max_len, 0);
            ids
        })
        .collect();
    let mut cache = decoder.new_cache(rows.len());
    let hidden = decoder.forward_hidden(&padded, &mut cache)?;
    let [batch, seq_len, d] = hidden.dims();
    let mut positions = Vec::new();
    let mut labels = Vec::new();
    let mut counts = Vec::with_capacity(rows.len());
    for (r, row) in rows.iter().enumerate() {
        for t in row.n_prompt..row.ids.len() {
            positions.push((r * seq_len + t - 1) as i32);
            labels.push(row.ids[t]);
        }
        counts.push(row.n_response());
    }
    let n = positions.len();
    let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &hidden.device());
    Ok(ResponseHidden {
        hidden: hidden.reshape([batch * seq_len, d]).select(0, positions),
        labels,
        counts,
    })
}

/// [`response_hidden`] through the decoder's output head (whatever form its weight has) and
/// [`token_logps`]: the log-probabilities of the response tokens of `rows`.
pub fn response_logps(decoder: &Decoder, rows: &[&Tokenized]) -> Result<SequenceLogps> {
    let ResponseHidden { hidden, labels, counts } = response_hidden(decoder, rows)?;
    let [n, d] = hidden.dims();
    let device = hidden.device();
    let targets: Vec<i32> = labels.iter().map(|&t| t as i32).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let logits = decoder
        .logits(hidden.reshape([1, n, d]))
        .reshape([n, decoder.config.vocab_size]);
    Ok(SequenceLogps {
        token_logps: token_logps(logits, targets),
        counts,
    })
}

/// Chosen and rejected log-probabilities of a batch of pairs, in one forward pass of
/// `2 * pairs.len()` rows.
pub fn pair_logps(decoder: &Decoder, pairs: &[TokenizedPair]) -> Result<(SequenceLogps, SequenceLogps)> {
    let rows: Vec<&Tokenized> = pairs
        .iter()
        .map(|p| &p.chosen)
        .chain(pairs.iter().map(|p| &p.rejected))
        .collect();
    let all = response_logps(decoder, &rows)?;
    let n_chosen: usize = all.counts[..pairs.len()].iter().sum();
    let total = all.token_logps.dims()[0];
    let chosen = SequenceLogps {
        token_logps: all.token_logps.clone().narrow(0, 0, n_chosen),
        counts: all.counts[..pairs.len()].to_vec(),
    };
    let rejected = SequenceLogps {
        token_logps: all.token_logps.narrow(0, n_chosen, total - n_chosen),
        counts: all.counts[pairs.len()..].to_vec(),
    };
    Ok((chosen, rejected))
}

/// ORPO's loss and the tensors it is made of (still on the graph).
#[derive(Debug, Clone)]
pub struct OrpoLoss {
    /// `nll_w - beta * mean(log_sigmoid)`, `[1]`.
    pub loss: Tensor<1>,
    /// Token-mean NLL of the chosen responses, `[1]`.
    pub nll_w: Tensor<1>,
    /// `[pairs]`.
    pub lp_w: Tensor<1>,
    /// `[pairs]`.
    pub lp_l: Tensor<1>,
    /// `[pairs]`.
    pub log_odds: Tensor<1>,
    /// `[pairs]`.
    pub log_sigmoid: Tensor<1>,
    pub beta: f64,
}

/// ORPO over a batch of pairs: the shaders crate's formula (the one the trainer's fused
/// kernel feeds), given per-pair sums and lengths; this is the eager path's entry point.
pub fn orpo_loss(chosen: &SequenceLogps, rejected: &SequenceLogps, beta: f64) -> Result<OrpoLoss> {
    let p = chosen.counts.len();
    if rejected.counts.len() != p {
        return Err(Error::Invalid(format!(
            "{p} chosen but {} rejected responses",
            rejected.counts.len()
        )));
    }
    // Chosen and rejected alternate: [w0, l0, w1, l1, ...].
    let sums = Tensor::stack::<2>(vec![chosen.sum(), rejected.sum()], 1).reshape([2 * p]);
    let lengths: Vec<usize> = chosen
        .counts
        .iter()
        .zip(&rejected.counts)
        .flat_map(|(&w, &l)| [w, l])
        .collect();
    let out = sealong::train::orpo::orpo_loss(sums, &lengths, beta as f32)?;
    Ok(OrpoLoss {
        loss: out.loss,
        nll_w: out.nll,
        lp_w: out.lp_chosen,
        lp_l: out.lp_rejected,
        log_sigmoid: log_sigmoid(out.log_odds.clone()),
        log_odds: out.log_odds,
        beta,
    })
}

/// SFT: the token-mean NLL of the chosen responses, `[1]`.
pub fn sft_loss(chosen: &SequenceLogps) -> Tensor<1> {
    chosen.nll()
}

/// What a training step logs (read back from the device).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OrpoMetrics {
    pub loss: f32,
    pub nll_w: f32,
    /// Per pair.
    pub lp_w: Vec<f32>,
    pub lp_l: Vec<f32>,
    pub log_odds: Vec<f32>,
    pub log_sigmoid: Vec<f32>,
    /// Batch means of `beta * lp_w`, `beta * lp_l`, their difference, and of
    /// `[chosen_reward > rejected_reward]`.
    pub chosen_reward: f32,
    pub rejected_reward: f32,
    pub reward_margin: f32,
    pub reward_accuracy: f32,
    /// Mean log odds over the batch.
    pub mean_log_odds: f32,
}

fn values(t: &Tensor<1>) -> Result<Vec<f32>> {
    t.clone()
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Invalid(format!("reading a loss tensor back: {e:?}")))
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}

impl OrpoLoss {
    /// Reads the logged quantities back.
    pub fn metrics(&self) -> Result<OrpoMetrics> {
        let lp_w = values(&self.lp_w)?;
        let lp_l = values(&self.lp_l)?;
        let beta = self.beta as f32;
        let chosen: Vec<f32> = lp_w.iter().map(|x| beta * x).collect();
        let rejected: Vec<f32> = lp_l.iter().map(|x| beta * x).collect();
        let acc: Vec<f32> = chosen
            .iter()
            .zip(&rejected)
            .map(|(c, r)| if c > r { 1.0 } else { 0.0 })
            .collect();
        let margins: Vec<f32> = chosen.iter().zip(&rejected).map(|(c, r)| c - r).collect();
        let log_odds = values(&self.log_odds)?;
        Ok(OrpoMetrics {
            loss: values(&self.loss)?[0],
            nll_w: values(&self.nll_w)?[0],
            chosen_reward: mean(&chosen),
            rejected_reward: mean(&rejected),
            reward_margin: mean(&margins),
            reward_accuracy: mean(&acc),
            mean_log_odds: mean(&log_odds),
            log_sigmoid: values(&self.log_sigmoid)?,
            lp_w,
            lp_l,
            log_odds,
        })
    }
}
