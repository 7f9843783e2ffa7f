//! The batched similarity + MBR cubecl kernel (`sealong_shaders::mbr_scores`) against its
//! plain-burn twin (`mbr_scores_reference`), and both against the golden MiniLM MBR groups.
//!
//! Tolerances: similarity and scores max |d| <= 1e-5 kernel (wgpu) vs twin (flex) on unit-norm
//! rows (both accumulate in f32, only in different orders); <= 1e-4 against the float64 golden
//! (the f32 rounding of 384-term dot products). `chosen` must be identical: random inputs are
//! built with a clear winner (a planted centroid sample, margin checked), and exact ties use
//! dyadic vectors whose products and sums are exact in f32 on every backend, so the first
//! index must win everywhere.
//!
//! The kernel runs on wgpu (Mesa lavapipe where there is no GPU). If no wgpu adapter can be
//! created the tests fail; they never skip.

use std::time::Instant;

use burn::prelude::*;
use sealong_shaders::{MbrError, MbrOutput, embeddings_from_data, mbr_scores, mbr_scores_auto, mbr_scores_reference};
use sealong_tests::{SplitMix as Rng, golden_dir, max_abs_diff, wgpu_device as gpu};

/// Kernel vs twin, similarity and scores.
const PARITY_TOL: f32 = 1e-5;
/// Against the float64 golden.
const GOLDEN_TOL: f64 = 1e-4;

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

/// `b` questions of `n` random unit rows of width `d`; in each question one sample (at a random
/// index, returned) is the normalized sum of the others, which gives it the highest MBR score.
/// A question whose top-2 score gap (computed in f64) is under 1e-2 is drawn again, so the
/// winner is clear. Returns the flat `[b, n, d]` values and the planted indices.
fn planted(seed: u64, b: usize, n: usize, d: usize) -> (Vec<f32>, Vec<usize>) {
    let mut rng = Rng(seed);
    let mut values = Vec::with_capacity(b * n * d);
    let mut winners = Vec::with_capacity(b);
    for _ in 0..b {
        let (rows, w) = loop {
            let mut rows: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    let mut r: Vec<f32> = (0..d).map(|_| rng.sym()).collect();
                    normalize(&mut r);
                    r
                })
                .collect();
            let w = rng.below(n);
            if n > 1 {
                let mut centroid = vec![0.0f32; d];
                for (i, r) in rows.iter().enumerate() {
                    if i != w {
                        centroid.iter_mut().zip(r).for_each(|(c, x)| *c += x);
                    }
                }
                normalize(&mut centroid);
                rows[w] = centroid;
            }
            if f64_top_gap(&rows) >= 1e-2 {
                break (rows, w);
            }
        };
        values.extend(rows.into_iter().flatten());
        winners.push(w);
    }
    (values, winners)
}

/// Gap between the best and second-best MBR score of one question, in f64.
fn f64_top_gap(rows: &[Vec<f32>]) -> f64 {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
    let mut s: Vec<f64> = rows
        .iter()
        .map(|r| rows.iter().map(|o| dot(r, o)).sum::<f64>() / rows.len() as f64)
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    if s.len() > 1 { s[0] - s[1] } else { f64::INFINITY }
}

fn tensor(values: &[f32], shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::<3>::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Host copies of an MBR output.
struct Host {
    similarity: Vec<f32>,
    scores: Vec<f32>,
    chosen: Vec<i64>,
}

fn host(out: MbrOutput) -> Host {
    Host {
        similarity: out.similarity.try_into_vec_as::<f32>().expect("read similarity"),
        scores: out.scores.try_into_vec_as::<f32>().expect("read scores"),
        chosen: out.chosen.try_into_vec_as::<i64>().expect("read chosen"),
    }
}

/// Smallest gap between the best and second-best score over the questions.
fn min_top_gap(scores: &[f32], n: usize) -> f32 {
    scores
        .chunks(n)
        .map(|row| {
            let mut s = row.to_vec();
            s.sort_by(|a, b| b.total_cmp(a));
            if s.len() > 1 { s[0] - s[1] } else { f32::INFINITY }
        })
        .fold(f32::INFINITY, f32::min)
}

/// Kernel on wgpu vs twin on flex for one shape; returns (kernel, twin).
fn compare(seed: u64, b: usize, n: usize, d: usize) -> (Host, Host) {
    let (values, winners) = planted(seed, b, n, d);
    let kernel = host(mbr_scores(tensor(&values, [b, n, d], &gpu())).expect("kernel"));
    let twin = host(mbr_scores_reference(tensor(&values, [b, n, d], &Device::flex())).expect("twin"));

    assert_eq!(kernel.similarity.len(), b * n * n, "similarity shape");
    assert_eq!(kernel.scores.len(), b * n, "scores shape");
    assert_eq!(kernel.chosen.len(), b, "chosen shape");
    let ds = max_abs_diff(&kernel.similarity, &twin.similarity);
    let dr = max_abs_diff(&kernel.scores, &twin.scores);
    let gap = min_top_gap(&twin.scores, n);
    println!("B={b} N={n} D={d}: similarity max|d| {ds:.2e}, scores max|d| {dr:.2e}, min top-2 gap {gap:.2e}");
    assert!(ds <= PARITY_TOL, "B={b} N={n} D={d}: similarity max |d| = {ds}");
    assert!(dr <= PARITY_TOL, "B={b} N={n} D={d}: scores max |d| = {dr}");
    assert!(
        gap > 100.0 * PARITY_TOL,
        "test input has a near tie (gap {gap}); the planted winner should be clear"
    );
    let expected: Vec<i64> = winners.iter().map(|&w| w as i64).collect();
    assert_eq!(twin.chosen, expected, "twin picks the planted sample");
    assert_eq!(kernel.chosen, twin.chosen, "B={b} N={n} D={d}: chosen");

    // The similarity is symmetric with a unit diagonal (rows are unit vectors) and scores are its row means.
    for q in 0..b {
        for i in 0..n {
            let row = &kernel.similarity[(q * n + i) * n..(q * n + i + 1) * n];
            assert!((row[i] - 1.0).abs() <= 1e-5, "diagonal {q},{i} = {}", row[i]);
            let mean = row.iter().sum::<f32>() / n as f32;
            assert!((mean - kernel.scores[q * n + i]).abs() <= 1e-5, "score {q},{i}");
        }
    }
    (kernel, twin)
}

#[test]
fn kernel_matches_twin_on_random_shapes() {
    // Odd sizes, one sample, sizes that straddle the kernel's 16-wide blocks and D slices, the
    // brief's N=32/D=384/B=10, and the largest N, D asked for.
    for (seed, b, n, d) in [
        (1, 3, 5, 7),
        (2, 1, 1, 1),
        (3, 4, 1, 9),
        (4, 10, 32, 384),
        (5, 2, 17, 33),
        (6, 5, 16, 16),
        (7, 3, 64, 1024),
        (8, 2, 65, 1031),
        (9, 7, 3, 2),
        (10, 1, 100, 48),
    ] {
        compare(seed, b, n, d);
    }
}

#[test]
fn kernel_handles_non_contiguous_input() {
    // A [B, D, N] tensor swapped to [B, N, D] is a strided view; the kernel indexes by strides.
    let (b, n, d) = (3, 9, 20);
    let (values, winners) = planted(11, b, n, d);
    let mut transposed = vec![0.0f32; values.len()];
    for q in 0..b {
        for i in 0..n {
            for k in 0..d {
                transposed[(q * d + k) * n + i] = values[(q * n + i) * d + k];
            }
        }
    }
    let view = |device: &Device| {
        Tensor::<3>::from_data(TensorData::new(transposed.clone(), [b, d, n]), device).swap_dims(1, 2)
    };
    let kernel = host(mbr_scores(view(&gpu())).expect("kernel"));
    let twin = host(mbr_scores_reference(tensor(&values, [b, n, d], &Device::flex())).expect("twin"));
    assert!(max_abs_diff(&kernel.similarity, &twin.similarity) <= PARITY_TOL);
    assert!(max_abs_diff(&kernel.scores, &twin.scores) <= PARITY_TOL);
    assert_eq!(kernel.chosen, winners.iter().map(|&w| w as i64).collect::<Vec<_>>());
}

/// Dyadic unit rows: every product and partial sum is exact in f32, so equal rows give
/// bit-equal scores on every backend and in every summation order.
fn dyadic_ties() -> (Vec<f32>, [usize; 3], Vec<i64>) {
    let (n, d) = (20, 4);
    let v = [0.5f32; 4];
    let one_hot = |k: usize| {
        let mut r = [0.0f32; 4];
        r[k] = 1.0;
        r
    };
    let mut values = Vec::new();
    let mut expected = Vec::new();
    // Question 0: every sample the same: all scores tie, the first wins.
    for _ in 0..n {
        values.extend(v);
    }
    expected.push(0);
    // Question 1: samples 5 and 17 (different 16-blocks in the kernel) are v and tie on top.
    for i in 0..n {
        values.extend(if i == 5 || i == 17 { v } else { one_hot(i % d) });
    }
    expected.push(5);
    // Question 2: the tie only inside the second block (16 and 19).
    for i in 0..n {
        values.extend(if i == 16 || i == 19 { v } else { one_hot(i % d) });
    }
    expected.push(16);
    // Question 3: a tie on the last two samples of the first block (14 and 15).
    for i in 0..n {
        values.extend(if i == 14 || i == 15 { v } else { one_hot(i % d) });
    }
    expected.push(14);
    (values, [expected.len(), n, d], expected)
}

#[test]
fn exact_ties_pick_the_first_index() {
    let (values, shape, expected) = dyadic_ties();
    let twin = host(mbr_scores_reference(tensor(&values, shape, &Device::flex())).expect("twin"));
    let twin_gpu = host(mbr_scores_reference(tensor(&values, shape, &gpu())).expect("twin on wgpu"));
    let kernel = host(mbr_scores(tensor(&values, shape, &gpu())).expect("kernel"));
    // The ties are real: the two planted scores are bit-equal.
    let n = shape[1];
    for (q, &e) in expected.iter().enumerate().skip(1) {
        let row = &twin.scores[q * n..(q + 1) * n];
        let top = row.iter().copied().fold(f32::MIN, f32::max);
        assert_eq!(
            row.iter().filter(|&&s| s == top).count(),
            2,
            "question {q}: exactly two tied on top"
        );
        assert_eq!(row[e as usize], top);
    }
    assert_eq!(twin.chosen, expected, "twin on flex");
    assert_eq!(twin_gpu.chosen, expected, "twin on wgpu");
    assert_eq!(kernel.chosen, expected, "kernel");
    assert_eq!(kernel.scores, twin.scores, "exact arithmetic: bit-equal scores");
    assert_eq!(
        kernel.similarity, twin.similarity,
        "exact arithmetic: bit-equal similarity"
    );
}

/// One golden MBR group.
struct GoldenGroup {
    /// `[n, d]` f32, row-major.
    embeddings: Vec<f32>,
    d: usize,
    /// `[n, n]` float64, row-major.
    similarity: Vec<f64>,
    scores: Vec<f64>,
    chosen: i64,
}

/// The golden MBR groups of `mbr_embedding.json`, embeddings from `minilm_embeddings.safetensors`.
fn golden_groups() -> Vec<GoldenGroup> {
    let json = sealong_tests::golden_json("mbr_embedding.json");
    let bytes = std::fs::read(golden_dir().join("minilm_embeddings.safetensors")).expect("golden safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let groups = json["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    groups
        .iter()
        .map(|g| {
            let name = g["embeddings_tensor"].as_str().expect("embeddings_tensor");
            let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let shape = view.shape().to_vec();
            assert_eq!(shape.len(), 2, "{name}");
            let emb: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let floats = |v: &serde_json::Value| -> Vec<f64> {
                v.as_array()
                    .expect("array")
                    .iter()
                    .map(|x| x.as_f64().expect("number"))
                    .collect()
            };
            let sim: Vec<f64> = g["similarity"]
                .as_array()
                .expect("similarity")
                .iter()
                .flat_map(floats)
                .collect();
            let scores = floats(&g["scores"]);
            let chosen = g["chosen"].as_i64().expect("chosen");
            assert_eq!(scores.len(), shape[0]);
            assert_eq!(sim.len(), shape[0] * shape[0]);
            GoldenGroup {
                embeddings: emb,
                d: shape[1],
                similarity: sim,
                scores,
                chosen,
            }
        })
        .collect()
}

fn check_golden(label: &str, device: &Device, run: fn(Tensor<3>) -> Result<MbrOutput, MbrError>) {
    for (
        k,
        GoldenGroup {
            embeddings: emb,
            d,
            similarity: sim,
            scores,
            chosen,
        },
    ) in golden_groups().into_iter().enumerate()
    {
        let n = scores.len();
        let out = host(run(tensor(&emb, [1, n, d], device)).expect(label));
        let ds = out
            .similarity
            .iter()
            .zip(&sim)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let dr = out
            .scores
            .iter()
            .zip(&scores)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        println!("{label} golden group {k} (N={n}): similarity max|d| {ds:.2e}, scores max|d| {dr:.2e}");
        assert!(ds <= GOLDEN_TOL, "{label} group {k}: similarity max |d| = {ds}");
        assert!(dr <= GOLDEN_TOL, "{label} group {k}: scores max |d| = {dr}");
        assert_eq!(out.chosen, vec![chosen], "{label} group {k}: chosen");
    }
}

/// The real path: core's `mbr::method::rank_embeddings` (what `score`, `eval` and the page call)
/// with the wgpu device runs this kernel; against its host path (the f64 similarity matrix) it
/// picks the same chosen, rejected pool and rejected, with matrix and scores within
/// `PARITY_TOL` (1e-5: f32 dot products of unit rows against f64 ones).
#[test]
fn core_rank_on_wgpu_matches_the_host_path() {
    use sealong::mbr::method::{rank_embeddings, score_stream};
    let d = 384;
    // n >= 3: `planted` needs a winner that differs from the others (with 2 samples the planted
    // centroid equals the other row and no gap can be drawn).
    for (k, n) in [3usize, 5, 8, 17, 32].into_iter().enumerate() {
        let (values, winners) = planted(900 + k as u64, 1, n, d);
        let rows: Vec<Vec<f32>> = values.chunks(d).map(<[f32]>::to_vec).collect();
        let id = format!("q{k}");
        let host = rank_embeddings(&rows, None, &mut score_stream(7, &id)).expect("host");
        let on_gpu = rank_embeddings(&rows, Some(&gpu()), &mut score_stream(7, &id)).expect("wgpu");
        let (h, g) = (&host.selection, &on_gpu.selection);
        assert_eq!(h.chosen, winners[0], "n {n}: planted winner");
        assert_eq!(
            (g.chosen, &g.rejected_pool, g.rejected),
            (h.chosen, &h.rejected_pool, h.rejected),
            "n {n}"
        );
        for (what, a, b) in [
            ("scores", &g.scores, &h.scores),
            ("matrix", &on_gpu.matrix, &host.matrix),
        ] {
            assert_eq!(a.len(), b.len(), "n {n} {what}");
            for (x, y) in a.iter().zip(b.iter()) {
                assert!(
                    (x - y).abs() <= f64::from(PARITY_TOL),
                    "n {n} {what}: wgpu {x} vs host {y}"
                );
            }
        }
    }
}

#[test]
fn twin_on_flex_matches_golden() {
    check_golden("twin/flex", &Device::flex(), mbr_scores_reference);
}

#[test]
fn kernel_on_wgpu_matches_golden() {
    check_golden("kernel/wgpu", &gpu(), mbr_scores);
}

#[test]
fn auto_picks_kernel_on_wgpu_and_twin_on_flex() {
    let (b, n, d) = (4, 12, 40);
    let (values, _) = planted(21, b, n, d);
    let on_gpu = host(mbr_scores_auto(tensor(&values, [b, n, d], &gpu())).expect("auto wgpu"));
    let kernel = host(mbr_scores(tensor(&values, [b, n, d], &gpu())).expect("kernel"));
    assert_eq!(
        on_gpu.similarity, kernel.similarity,
        "auto on wgpu = the kernel, bit for bit"
    );
    assert_eq!(on_gpu.scores, kernel.scores);
    assert_eq!(on_gpu.chosen, kernel.chosen);

    let on_cpu = host(mbr_scores_auto(tensor(&values, [b, n, d], &Device::flex())).expect("auto flex"));
    let twin = host(mbr_scores_reference(tensor(&values, [b, n, d], &Device::flex())).expect("twin"));
    assert_eq!(
        on_cpu.similarity, twin.similarity,
        "auto on flex = the twin, bit for bit"
    );
    assert_eq!(on_cpu.chosen, twin.chosen);

    // A tracked tensor goes through the twin, so the gradient reaches the embeddings.
    let emb = tensor(&values, [b, n, d], &Device::flex().autodiff()).require_grad();
    let out = mbr_scores_auto(emb.clone()).expect("auto autodiff");
    let grads = out.scores.sum().backward();
    let g = emb.grad(&grads).expect("gradient through the twin");
    assert_eq!(g.dims(), [b, n, d]);
}

#[test]
fn bad_inputs_are_refused() {
    let cpu = Device::flex();
    let gpu = gpu();
    type Run = fn(Tensor<3>) -> Result<MbrOutput, MbrError>;
    let runs: [(&str, Run); 3] = [
        ("kernel", mbr_scores),
        ("twin", mbr_scores_reference),
        ("auto", mbr_scores_auto),
    ];
    for (label, run) in runs {
        for device in [&cpu, &gpu] {
            let err = run(Tensor::<3>::zeros([2, 0, 4], device)).err();
            assert_eq!(err, Some(MbrError::NoSamples), "{label} on {device:?}: N = 0");
            let err = run(Tensor::<3>::zeros([2, 3, 0], device)).err();
            assert_eq!(err, Some(MbrError::NoDims), "{label} on {device:?}: D = 0");
            // B = 0 is an empty batch, not an error.
            let out = run(Tensor::<3>::zeros([0, 3, 4], device)).expect("empty batch");
            assert_eq!(out.similarity.dims(), [0, 3, 3]);
            assert_eq!(out.scores.dims(), [0, 3]);
            assert_eq!(out.chosen.dims(), [0]);
        }
    }
    let msg = MbrError::NoSamples.to_string();
    assert!(msg.contains("N = 0"), "{msg}");

    // The kernel refuses tensors that are not on a cubecl device.
    let err = mbr_scores(Tensor::<3>::ones([1, 2, 3], &cpu)).err();
    assert!(matches!(err, Some(MbrError::NotCubeDevice { .. })), "{err:?}");

    // Rank and dtype checks for data of unknown shape.
    let rank2 = TensorData::new(vec![0.5f32; 6], [2, 3]);
    assert_eq!(
        embeddings_from_data(rank2, &cpu).err(),
        Some(MbrError::Rank { rank: 2 })
    );
    let rank4 = TensorData::new(vec![0.5f32; 8], [1, 2, 2, 2]);
    assert_eq!(
        embeddings_from_data(rank4, &cpu).err(),
        Some(MbrError::Rank { rank: 4 })
    );
    let ints = TensorData::new(vec![1i32; 6], [1, 2, 3]);
    assert!(matches!(
        embeddings_from_data(ints, &cpu).err(),
        Some(MbrError::NotFloat { .. })
    ));
    let no_dims = TensorData::new(Vec::<f32>::new(), [1, 2, 0]);
    assert_eq!(embeddings_from_data(no_dims, &cpu).err(), Some(MbrError::NoDims));
    let ok = embeddings_from_data(TensorData::new(vec![0.6f32, 0.8, 1.0, 0.0], [1, 2, 2]), &gpu).expect("valid");
    let out = host(mbr_scores_auto(ok).expect("auto"));
    assert_eq!(out.chosen, vec![0]);
}

#[test]
fn kernel_timing_b1000_n32_d1024() {
    let (b, n, d) = (1000, 32, 1024);
    let (values, winners) = planted(31, b, n, d);
    let gpu = gpu();
    let input = tensor(&values, [b, n, d], &gpu);
    gpu.sync().expect("upload");
    // First launch compiles the kernel; time the second.
    let warm = mbr_scores(input.clone()).expect("kernel");
    let _ = warm.chosen.try_into_vec_as::<i64>().expect("read");
    let start = Instant::now();
    let out = mbr_scores(input).expect("kernel");
    gpu.sync().expect("sync");
    let elapsed = start.elapsed();
    let info = format!("{gpu:?}");
    println!(
        "MBR kernel, one launch, B={b} N={n} D={d} on {info}: {:.1} ms ({:.2} GFLOP/s)",
        elapsed.as_secs_f64() * 1e3,
        2.0 * (b * n * n * d) as f64 / elapsed.as_secs_f64() / 1e9
    );
    let kernel = host(out);
    assert_eq!(kernel.chosen, winners.iter().map(|&w| w as i64).collect::<Vec<_>>());

    let start = Instant::now();
    let twin = host(mbr_scores_reference(tensor(&values, [b, n, d], &Device::flex())).expect("twin"));
    println!(
        "twin on flex, same batch: {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    assert!(max_abs_diff(&kernel.scores, &twin.scores) <= PARITY_TOL);
    assert!(max_abs_diff(&kernel.similarity, &twin.similarity) <= PARITY_TOL);
    assert_eq!(kernel.chosen, twin.chosen);
}
