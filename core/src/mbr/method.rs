//! The MBR method, one home for `sealong score`, `sealong eval` and the page: which utility (or
//! baseline) ranks a question's N answers, the names the CLI and the records use, the
//! per-question random streams, and the select step for each kind of utility.
//!
//! A new pairwise text utility is one file beside this one (its `*_matrix(texts)`) and one
//! [`Method`] variant here (name, help, and its arm in [`Method::text_matrix`]); the CLI's flag,
//! the records' `method` field and the page's switch all read [`Method::ALL`].
//!
//! Embedding MBR runs on the host in f64 ([`embedding::similarity_matrix`], what the goldens
//! hold), or, given a GPU device, through the cubecl kernel of `sealong-shaders`
//! ([`sealong_shaders::mbr_scores_auto`]) in f32: the same chosen and rejected, scores within
//! f32 rounding of the host's (tested on lavapipe in `tests/tests/suite/mbr_kernel.rs`).

use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;

use super::select::{self, Selection};
use super::{chrf, embedding, rouge};
use crate::rng;
use crate::{Error, Result};

/// How a question's N answers are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// MBR with the cosine between sentence embeddings (the paper's default).
    Embedding,
    /// MBR with ROUGE-L F1 (rouge-score's tokenization, no stemmer).
    RougeL,
    /// MBR with chrF (sacrebleu's CHRF defaults: character 6-grams, beta 2; 0 to 100).
    Chrf,
    /// The decoder rates each answer 1..5 given the context (reference-free, not MBR).
    SelfEval,
    /// MBR with the decoder judging whether two answers agree (True = 1, False = 0).
    RefSelfEval,
    /// A uniformly random chosen and rejected (baseline).
    Random,
}

impl Method {
    /// Every method, in the order the CLI lists them.
    pub const ALL: [Method; 6] = [
        Method::Embedding,
        Method::RougeL,
        Method::Chrf,
        Method::SelfEval,
        Method::RefSelfEval,
        Method::Random,
    ];

    /// The name on the command line, in the records' `method` field and in the page.
    pub fn name(self) -> &'static str {
        match self {
            Method::Embedding => "embedding",
            Method::RougeL => "rouge-l",
            Method::Chrf => "chrf",
            Method::SelfEval => "self-eval",
            Method::RefSelfEval => "ref-self-eval",
            Method::Random => "random",
        }
    }

    /// One line of help for the method (the CLI's possible-value help).
    pub fn help(self) -> &'static str {
        match self {
            Method::Embedding => "MBR with the cosine between sentence embeddings (the paper's default)",
            Method::RougeL => "MBR with ROUGE-L F1 (rouge-score's tokenization, no stemmer)",
            Method::Chrf => "MBR with chrF (sacrebleu's CHRF defaults: character 6-grams, beta 2; 0 to 100)",
            Method::SelfEval => "The decoder rates each answer 1..5 given the context (reference-free, not MBR)",
            Method::RefSelfEval => "MBR with the decoder judging whether two answers agree (True = 1, False = 0)",
            Method::Random => "A uniformly random chosen and rejected (baseline)",
        }
    }

    /// The method named `name` (exactly, or ignoring ASCII case when `ignore_case`); the error
    /// lists the names.
    pub fn from_name(name: &str, ignore_case: bool) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| {
                if ignore_case {
                    m.name().eq_ignore_ascii_case(name)
                } else {
                    m.name() == name
                }
            })
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown MBR method {name:?} (one of {})",
                    Method::ALL.map(Method::name).join(", ")
                ))
            })
    }

    /// Whether the method ranks with a sentence embedder.
    pub fn needs_embedder(self) -> bool {
        self == Method::Embedding
    }

    /// Whether the method compares the answers' texts (embedding MBR or a text utility), so
    /// a long-text reading ([`super::LongText`]) applies.
    pub fn compares_texts(self) -> bool {
        matches!(self, Method::Embedding | Method::RougeL | Method::Chrf)
    }

    /// Whether the method judges with the decoder (the self-eval methods).
    pub fn needs_judge(self) -> bool {
        matches!(self, Method::SelfEval | Method::RefSelfEval)
    }

    /// The utility matrix of a pairwise text utility (no model), row-major `[n, n]`, or `None`
    /// for a method that needs a model or has no matrix. A new text utility adds its arm here.
    pub fn text_matrix<S: AsRef<str> + Sync>(self, texts: &[S]) -> Option<Vec<f64>> {
        match self {
            Method::RougeL => Some(rouge::rouge_l_f1_matrix(texts)),
            Method::Chrf => Some(chrf::chrf_matrix(texts)),
            Method::Embedding | Method::SelfEval | Method::RefSelfEval | Method::Random => None,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Method> {
        Method::from_name(s, false)
    }
}

/// The random stream of `sealong score` and the page for question `id`: (seed, `"{id}#score"`).
/// It draws the rejected answer (and both answers for [`Method::Random`]).
pub fn score_stream(seed: u64, id: &str) -> rng::Rng {
    rng::for_item(seed, &format!("{id}#score"))
}

/// The random stream of `sealong eval`'s MBR@N pick for question `key`: (seed, `"{key}#mbr"`).
pub fn eval_stream(seed: u64, key: &str) -> rng::Rng {
    rng::for_item(seed, &format!("{key}#mbr"))
}

/// The random stream of `sealong study n`'s k-subsets of question `key`'s samples: (seed,
/// `"{key}#mbr@{k}"`), one per k, so a k's subsets do not depend on the other k's.
pub fn study_stream(seed: u64, key: &str, k: usize) -> rng::Rng {
    rng::for_item(seed, &format!("{key}#mbr@{k}"))
}

/// One question ranked by a matrix utility: the matrix (row-major `[n, n]`) and the selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub matrix: Vec<f64>,
    pub selection: Selection,
}

/// MBR of a pairwise text utility ([`Method::text_matrix`]); errors for a method that needs a
/// model, or for fewer than 2 answers.
pub fn rank_texts<S: AsRef<str> + Sync>(method: Method, texts: &[S], rng: &mut impl Rng) -> Result<Ranked> {
    let matrix = method
        .text_matrix(texts)
        .ok_or_else(|| Error::Invalid(format!("MBR method {method} needs a model; it is not a text utility")))?;
    let selection = select::select_from_matrix(&matrix, texts.len(), rng)?;
    Ok(Ranked { matrix, selection })
}

/// Embedding MBR of one question's vectors. `gpu: None` is the host path (the f64 similarity
/// matrix, numpy's row sums: what the goldens hold); `Some(device)` runs the cubecl kernel on that
/// device (burn's reference ops where the device has no kernels), reads back the f32 matrix and
/// scores, and selects from those scores: chosen is the kernel's, and it is checked.
pub fn rank_embeddings(embeddings: &[Vec<f32>], gpu: Option<&Device>, rng: &mut impl Rng) -> Result<Ranked> {
    let Some(device) = gpu else {
        return rank_on_host(embeddings, rng);
    };
    let (n, out) = launch(embeddings, device)?;
    let matrix = out
        .similarity
        .try_into_vec_as::<f32>()
        .map_err(|e| read_error("similarity", &e))?;
    let scores = out
        .scores
        .try_into_vec_as::<f32>()
        .map_err(|e| read_error("scores", &e))?;
    let chosen = out
        .chosen
        .try_into_vec_as::<i64>()
        .map_err(|e| read_error("choice", &e))?;
    from_kernel(n, &matrix, &scores, &chosen, rng)
}

/// [`rank_embeddings`] for callers that must not block on a device read (the browser's WebGPU
/// reads buffers back only asynchronously). Same results.
pub async fn rank_embeddings_async(
    embeddings: &[Vec<f32>],
    gpu: Option<&Device>,
    rng: &mut impl Rng,
) -> Result<Ranked> {
    let Some(device) = gpu else {
        return rank_on_host(embeddings, rng);
    };
    let (n, out) = launch(embeddings, device)?;
    let err = read_error;
    let matrix = out
        .similarity
        .into_data_async()
        .await
        .map_err(|e| err("similarity", &e))?;
    let matrix = matrix.try_into_vec_as::<f32>().map_err(|e| err("similarity", &e))?;
    let scores = out.scores.into_data_async().await.map_err(|e| err("scores", &e))?;
    let scores = scores.try_into_vec_as::<f32>().map_err(|e| err("scores", &e))?;
    let chosen = out.chosen.into_data_async().await.map_err(|e| err("choice", &e))?;
    let chosen = chosen.try_into_vec_as::<i64>().map_err(|e| err("choice", &e))?;
    from_kernel(n, &matrix, &scores, &chosen, rng)
}

fn read_error(what: &str, e: &dyn std::fmt::Debug) -> Error {
    Error::Invalid(format!("reading the MBR {what} back from the device: {e:?}"))
}

fn rank_on_host(embeddings: &[Vec<f32>], rng: &mut impl Rng) -> Result<Ranked> {
    let matrix = embedding::similarity_matrix(embeddings)?;
    let selection = select::select_from_matrix(&matrix, embeddings.len(), rng)?;
    Ok(Ranked { matrix, selection })
}

/// One question's vectors as a `[1, n, d]` batch on `device`, through the kernel.
fn launch(embeddings: &[Vec<f32>], device: &Device) -> Result<(usize, sealong_shaders::MbrOutput)> {
    let n = embeddings.len();
    let d = embedding::check_dims(embeddings)?;
    // The selection's own message for fewer than 2 answers, before any device work.
    select::check(&vec![0.0; n])?;
    let flat: Vec<f32> = embeddings.concat();
    let t = Tensor::<3>::from_data(TensorData::new(flat, [1, n, d]), device);
    let out = sealong_shaders::mbr_scores_auto(t).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((n, out))
}

/// The selection from the kernel's f32 scores (widened; order and ties are those of the f32
/// values), checked against the kernel's own first argmax.
fn from_kernel(n: usize, matrix: &[f32], scores: &[f32], chosen: &[i64], rng: &mut impl Rng) -> Result<Ranked> {
    if matrix.len() != n * n || scores.len() != n || chosen.len() != 1 {
        return Err(Error::Invalid(format!(
            "the MBR kernel returned {} similarities, {} scores and {} choices for {n} answers",
            matrix.len(),
            scores.len(),
            chosen.len()
        )));
    }
    let scores: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
    let selection = select::select(&scores, rng)?;
    if i64::try_from(selection.chosen).ok() != Some(chosen[0]) {
        return Err(Error::Invalid(format!(
            "the MBR kernel chose answer {} but its scores' first maximum is answer {}",
            chosen[0], selection.chosen
        )));
    }
    Ok(Ranked {
        matrix: matrix.iter().map(|&v| f64::from(v)).collect(),
        selection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_methods() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().expect("name"), m);
            assert_eq!(Method::from_name(&m.name().to_uppercase(), true).expect("case"), m);
            assert_eq!(m.to_string(), m.name());
            assert!(!m.help().ends_with('.'), "{m}: clap's help has no final period");
        }
        let e = "bleu".parse::<Method>().expect_err("unknown");
        assert!(
            e.to_string().contains("\"bleu\"") && e.to_string().contains("chrf"),
            "{e}"
        );
        assert!("Embedding".parse::<Method>().is_err());
    }

    #[test]
    fn text_utilities_rank_with_the_score_stream() {
        let texts = ["the cat sat", "the cat sat down", "a dog"];
        for m in [Method::RougeL, Method::Chrf] {
            let got = rank_texts(m, &texts, &mut score_stream(42, "q1")).expect("rank");
            let want = m.text_matrix(&texts).expect("matrix");
            let sel = select::select_from_matrix(&want, 3, &mut rng::for_item(42, "q1#score")).expect("sel");
            assert_eq!(
                got,
                Ranked {
                    matrix: want,
                    selection: sel
                }
            );
        }
        assert!(rank_texts(Method::Embedding, &texts, &mut score_stream(1, "q")).is_err());
        assert!(rank_texts(Method::Chrf, &texts[..1], &mut score_stream(1, "q")).is_err());
    }

    #[test]
    fn host_embedding_rank_is_the_f64_matrix_and_the_kernel_twin_agrees() {
        let e: Vec<Vec<f32>> = [[0.6f32, 0.8, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]
            .map(|r| r.to_vec())
            .into();
        let host = rank_embeddings(&e, None, &mut score_stream(7, "q")).expect("host");
        let sim = embedding::similarity_matrix(&e).expect("sim");
        let sel = select::select_from_matrix(&sim, 4, &mut score_stream(7, "q")).expect("sel");
        assert_eq!(
            host,
            Ranked {
                matrix: sim,
                selection: sel
            }
        );
        // On the CPU device the kernel's plain-burn twin runs: same pick, f32 scores.
        let cpu = rank_embeddings(&e, Some(&Device::flex()), &mut score_stream(7, "q")).expect("flex");
        assert_eq!(
            (cpu.selection.chosen, cpu.selection.rejected),
            (host.selection.chosen, host.selection.rejected)
        );
        for (a, b) in cpu.selection.scores.iter().zip(&host.selection.scores) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        assert!(rank_embeddings(&e[..1], Some(&Device::flex()), &mut score_stream(7, "q")).is_err());
        assert!(
            rank_embeddings(
                &[vec![1.0], vec![1.0, 0.0]],
                Some(&Device::flex()),
                &mut score_stream(7, "q")
            )
            .is_err()
        );
    }
}
