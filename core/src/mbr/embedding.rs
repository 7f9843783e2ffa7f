//! The paper's default utility: cosine (inner product of unit vectors) between sentence
//! embeddings of the N answers.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// The common width of one question's embeddings (0 for none); an error names the first vector
/// whose width differs from the first's (vectors from two embedders mixed in one question).
pub fn check_dims(embeddings: &[Vec<f32>]) -> Result<usize> {
    let d = embeddings.first().map_or(0, Vec::len);
    match embeddings.iter().enumerate().find(|(_, e)| e.len() != d) {
        Some((i, e)) => Err(Error::Invalid(format!(
            "embedding {i} has {} dims, embedding 0 has {d} (mixed embedders?)",
            e.len()
        ))),
        None => Ok(d),
    }
}

/// `S = E Eᵀ` in f64 from f32 embeddings (`n` rows of `d`), row-major `[n, n]` — how the
/// reference computes it, so scores agree to ~1e-12 and the argmax never flips on rounding.
pub fn similarity_matrix(embeddings: &[Vec<f32>]) -> Result<Vec<f64>> {
    let n = embeddings.len();
    check_dims(embeddings)?;
    let mut s = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let v: f64 = embeddings[i]
                .iter()
                .zip(&embeddings[j])
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            s[i * n + j] = v;
            s[j * n + i] = v;
        }
    }
    Ok(s)
}

/// MBR scores of `b` questions at once from `[b, n, d]` embeddings (row-major f32): the row
/// mean of `E Eᵀ` equals `E · mean(E)`, so each question costs `O(n d)` rather than `O(n² d)`.
/// The CPU path of batched scoring; GPUs run the fused kernel of `sealong-shaders`.
pub fn batched_scores(e: &[f32], b: usize, n: usize, d: usize) -> Result<Vec<f32>> {
    if e.len() != b * n * d {
        return Err(Error::Invalid(format!(
            "embeddings hold {} values, expected {b} x {n} x {d}",
            e.len()
        )));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut scores = vec![0.0f32; b * n];
    scores.par_chunks_mut(n).zip(e.par_chunks(n * d)).for_each(|(s, q)| {
        let mut mean = vec![0.0f32; d];
        for row in q.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
        }
        let inv = 1.0 / n as f32;
        mean.iter_mut().for_each(|m| *m *= inv);
        for (si, row) in s.iter_mut().zip(q.chunks_exact(d)) {
            *si = crate::quant::kernels::dot_f32(row, &mean);
        }
    });
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_scores_equal_row_means_of_the_similarity() {
        let (b, n, d) = (3, 5, 7);
        let e: Vec<f32> = (0..b * n * d).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
        let got = batched_scores(&e, b, n, d).unwrap();
        for q in 0..b {
            let rows: Vec<Vec<f32>> = (0..n)
                .map(|i| e[(q * n + i) * d..(q * n + i + 1) * d].to_vec())
                .collect();
            let s = similarity_matrix(&rows).unwrap();
            for i in 0..n {
                let want = s[i * n..(i + 1) * n].iter().sum::<f64>() / n as f64;
                assert!((f64::from(got[q * n + i]) - want).abs() < 1e-5, "{q} {i}");
            }
        }
        assert!(batched_scores(&e, b, n, d + 1).is_err());
        assert!(similarity_matrix(&[vec![1.0, 0.0], vec![1.0]]).is_err());
    }
}
