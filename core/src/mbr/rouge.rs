//! ROUGE-1, ROUGE-2 and ROUGE-L exactly as Python `rouge-score==0.1.2` computes them with
//! `RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=False).score(target, prediction)`,
//! and the fast all-pairs ROUGE-L F1 matrix that ROUGE-based MBR needs.
//!
//! rouge-score's tokenizer (`rouge/tokenize.py`): `text.lower()` (Python's full Unicode
//! lowercasing), every run of characters outside `[a-z0-9]` becomes one space, split on `\s+`,
//! keep only tokens matching `^[a-z0-9]+$` (which drops the empty strings at either end). The
//! tokens are therefore exactly the maximal runs of `[a-z0-9]` in the lowercased text: "café" gives
//! "caf", CJK text gives no tokens at all, and only two non-ASCII characters lowercase into the
//! class at all: U+0130 'İ' (to "i" + U+0307) and U+212A KELVIN SIGN (to "k"). Rust's
//! `char::to_lowercase` uses the same full (SpecialCasing) mappings, so it gives the same tokens.
//!
//! Scores (`rouge/rouge_scorer.py`, `rouge/scoring.py`): ROUGE-N from n-gram count overlaps
//! (sum over target n-grams of min(count in target, count in prediction)), precision = overlap /
//! max(#prediction n-grams, 1), recall = overlap / max(#target n-grams, 1); ROUGE-L from the LCS
//! length, 0 for all three when either side has no tokens; fmeasure = `2 * p * r / (p + r)` or 0.
//! The arithmetic is done in the same order as Python, so the values are bit-identical.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rand::{Rng, RngExt};
use rayon::prelude::*;

/// Precision, recall and F1 of one ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl Score {
    /// rouge-score's `Score(precision, recall, fmeasure)` with `scoring.fmeasure`.
    fn new(precision: f64, recall: f64) -> Self {
        Score {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one (target, prediction) pair.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RougeScores {
    pub rouge1: Score,
    pub rouge2: Score,
    pub rouge_l: Score,
}

/// `scoring.fmeasure`: `2 * precision * recall / (precision + recall)`, or 0 when both are 0.
/// Evaluated left to right like Python, so `(2p)·r / (p+r)`; `2p` is exact, which also makes the
/// result symmetric in (p, r) bit for bit (the MBR matrix relies on that).
#[inline]
pub fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// Calls `emit` with each rouge-score token of `text`, built in `buf` (reused, so tokenizing
/// allocates nothing per token).
fn for_each_token(text: &str, buf: &mut String, mut emit: impl FnMut(&str)) {
    buf.clear();
    // Push one lowercased char: part of the current token if it is in [a-z0-9], else a boundary.
    let mut push = |c: char, buf: &mut String| {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            buf.push(c);
        } else if !buf.is_empty() {
            emit(buf);
            buf.clear();
        }
    };
    for ch in text.chars() {
        if ch.is_ascii() {
            push(ch.to_ascii_lowercase(), buf);
        } else {
            // Full Unicode lowercasing, as Python's `str.lower()`: one char may become several
            // (U+0130 -> "i\u{307}"), and each of them is classified on its own.
            for lc in ch.to_lowercase() {
                push(lc, buf);
            }
        }
    }
    if !buf.is_empty() {
        emit(buf);
    }
}

/// rouge-score's tokens of `text` (see the module docs).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = String::new();
    for_each_token(text, &mut buf, |t| out.push(t.to_owned()));
    out
}

/// ROUGE-1/2/L of `prediction` against `target`, as `RougeScorer.score(target, prediction)`.
pub fn score(target: &str, prediction: &str) -> RougeScores {
    score_tokens(&tokenize(target), &tokenize(prediction))
}

/// [`score`] on already tokenized text.
pub fn score_tokens<S: AsRef<str>>(target: &[S], prediction: &[S]) -> RougeScores {
    let t: Vec<&str> = target.iter().map(AsRef::as_ref).collect();
    let p: Vec<&str> = prediction.iter().map(AsRef::as_ref).collect();
    RougeScores {
        rouge1: rouge_n(&t, &p, 1),
        rouge2: rouge_n(&t, &p, 2),
        rouge_l: rouge_l(&t, &p),
    }
}

/// `_score_ngrams(_create_ngrams(target, n), _create_ngrams(prediction, n))`.
fn rouge_n(target: &[&str], prediction: &[&str], n: usize) -> Score {
    fn ngrams<'a, 'b>(tokens: &'b [&'a str], n: usize) -> HashMap<&'b [&'a str], usize> {
        let mut counts = HashMap::new();
        if tokens.len() >= n {
            for w in tokens.windows(n) {
                *counts.entry(w).or_insert(0) += 1;
            }
        }
        counts
    }
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t.iter().map(|(g, &c)| c.min(p.get(g).copied().unwrap_or(0))).sum();
    let t_total: usize = t.values().sum();
    let p_total: usize = p.values().sum();
    Score::new(
        overlap as f64 / p_total.max(1) as f64,
        overlap as f64 / t_total.max(1) as f64,
    )
}

/// `_score_lcs(target, prediction)`.
fn rouge_l(target: &[&str], prediction: &[&str]) -> Score {
    if target.is_empty() || prediction.is_empty() {
        return Score::default();
    }
    let lcs = lcs_len_dp(target, prediction) as f64;
    Score::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// LCS length by the textbook O(n·m) dynamic programme with one rolling row: the reference twin
/// of the bit-parallel [`lcs_len_bits`] (tests check they agree), and what single-pair scoring
/// uses (one pair is never the bottleneck).
pub fn lcs_len_dp<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    // row[j] = LCS(a[..i], b[..j]) for the current i; `diag` carries LCS(a[..i-1], b[..j-1]).
    let mut row = vec![0u32; b.len() + 1];
    for x in a {
        let mut diag = 0u32;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()] as usize
}

/// Per-text match masks for the bit-parallel LCS: for each distinct token of the text, a bit
/// vector (`words` u64 words) with bit k set where the text has that token at position k.
struct MatchTable {
    len: usize,
    words: usize,
    /// Distinct token ids of the text, parallel to the mask rows; row `slot + 1` of `masks`
    /// (row 0 is all zeros, for tokens the text does not have).
    ids: Vec<u32>,
    masks: Vec<u64>,
}

impl MatchTable {
    /// `slot` is scratch of the vocabulary's size, all `0` on entry and on return.
    fn new(tokens: &[u32], slot: &mut [u32]) -> Self {
        let words = tokens.len().div_ceil(64);
        let mut ids = Vec::new();
        let mut masks = vec![0u64; words];
        for (k, &t) in tokens.iter().enumerate() {
            let s = &mut slot[t as usize];
            if *s == 0 {
                ids.push(t);
                *s = ids.len() as u32;
                masks.resize(masks.len() + words, 0);
            }
            masks[*s as usize * words + k / 64] |= 1u64 << (k % 64);
        }
        MatchTable {
            len: tokens.len(),
            words,
            ids,
            masks,
        }
    }

    fn mask(&self, slot: u32) -> &[u64] {
        let start = slot as usize * self.words;
        &self.masks[start..start + self.words]
    }
}

/// LCS length of the text behind `a` (with `slot` = its token -> mask-row map) and `b`, by the
/// bit-parallel algorithm of Allison–Dix / Hyyrö (2004): V starts all ones; for each token c of
/// `b`, with U = V & M[c], V = (V + U) | (V & !M[c]); the LCS is the number of zero bits among
/// the low |a| bits of V. One step costs ⌈|a|/64⌉ word operations instead of |a| DP cells, 64×
/// less work than the DP, and there are no data-dependent branches. `v` is scratch.
fn lcs_len_bits(a: &MatchTable, slot: &[u32], b: &[u32], v: &mut Vec<u64>) -> usize {
    if a.len == 0 || b.is_empty() {
        return 0;
    }
    v.clear();
    v.resize(a.words, !0u64);
    for &t in b {
        let m = a.mask(slot[t as usize]);
        let mut carry = false;
        for (vw, &mw) in v.iter_mut().zip(m) {
            let u = *vw & mw;
            // Multi-word V + U: the carry out of word k feeds word k+1. A carry out of the top
            // word, and carries into the unused bits above |a|, never reach the counted bits.
            let (s1, c1) = vw.overflowing_add(u);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            carry = c1 | c2;
            *vw = s2 | (*vw & !mw);
        }
    }
    let tail = a.len % 64;
    v.iter()
        .enumerate()
        .map(|(k, &w)| {
            let valid = if k + 1 == a.words && tail != 0 {
                (1u64 << tail) - 1
            } else {
                !0u64
            };
            (!w & valid).count_ones() as usize
        })
        .sum()
}

/// A small, fast hasher for interning short ASCII tokens (FxHash's multiply-rotate). The keys are
/// our own tokens, not adversarial input that would need SipHash's DoS resistance.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Tokenizes every text once and interns the tokens to dense u32 ids (comparing ids is one
/// instruction; the vocabulary size bounds the per-row lookup tables). Returns (ids per text,
/// vocabulary size).
fn intern_all<S: AsRef<str> + Sync>(texts: &[S]) -> (Vec<Vec<u32>>, usize) {
    // Tokenizing dominates this step and is independent per text: in parallel, each text's
    // tokens joined by single spaces into one string (one allocation per text, not per token).
    let joined: Vec<String> = texts
        .par_iter()
        .map(|t| {
            let mut s = String::new();
            let mut buf = String::new();
            for_each_token(t.as_ref(), &mut buf, |tok| {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(tok);
            });
            s
        })
        .collect();
    let mut vocab: HashMap<&str, u32, BuildHasherDefault<FxHasher>> = HashMap::default();
    let ids = joined
        .iter()
        .map(|s| {
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(|t| {
                    let next = vocab.len() as u32;
                    *vocab.entry(t).or_insert(next)
                })
                .collect()
        })
        .collect();
    (ids, vocab.len())
}

/// ROUGE-L F1 between every pair of `texts`: an N×N row-major matrix with
/// `M[i][j]` = F1 with target `texts[j]` and prediction `texts[i]` (what
/// `score(texts[j], texts[i]).rouge_l.fmeasure` gives, bit for bit). The diagonal is 1, or 0 for a
/// text without tokens.
///
/// Why it is fast: each text is tokenized once (not twice per pair as rouge-score does), tokens
/// are interned to u32 ids, each unordered pair's LCS is computed once (the LCS, and F1 as
/// [`fmeasure`] evaluates it, are symmetric), the LCS is bit-parallel (64 DP cells per word
/// operation), and rows run in parallel on rayon's pool. Memory: row i's match table holds
/// (distinct tokens of i) × ⌈|i|/64⌉ words, at most |i|²/8 bytes: nothing for answers, but
/// ~12 MB per worker for 10k-token texts.
pub fn rouge_l_f1_matrix<S: AsRef<str> + Sync>(texts: &[S]) -> Vec<f64> {
    let n = texts.len();
    let (ids, vocab) = intern_all(texts);
    // Row i: the LCS of text i with every later text j, against text i's match table. The table
    // is built once per row; `slot` maps a token id to its mask row and is reset after each row
    // (only the entries the row set), so each worker allocates it once.
    let rows: Vec<Vec<usize>> = (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0u32; vocab], Vec::new()),
            |(slot, v), i| {
                let table = MatchTable::new(&ids[i], slot);
                let lcs = ids[i + 1..].iter().map(|b| lcs_len_bits(&table, slot, b, v)).collect();
                for &t in &table.ids {
                    slot[t as usize] = 0;
                }
                lcs
            },
        )
        .collect();
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        let li = ids[i].len();
        if li > 0 {
            m[i * n + i] = fmeasure(1.0, 1.0);
        }
        for (k, &lcs) in rows[i].iter().enumerate() {
            let j = i + 1 + k;
            let lj = ids[j].len();
            // rouge-score returns 0 when either side has no tokens (before any division).
            let f = if li == 0 || lj == 0 {
                0.0
            } else {
                let lcs = lcs as f64;
                // prediction i, target j: precision over |i|, recall over |j|.
                fmeasure(lcs / li as f64, lcs / lj as f64)
            };
            m[i * n + j] = f;
            m[j * n + i] = f;
        }
    }
    m
}

/// Benchmark input shaped like the rouge-score peer's (`bench/peers/rouge_mbr.py`): `n` answers
/// of `n_words` words, each a copy of one random `n_words`-word window of `words` in which every
/// word is, with probability `p`, replaced by a random word of `words`. (The peer uses Python's
/// `random`; the streams differ, the distribution is the same.) `words` must be longer than
/// `n_words`.
pub fn bench_answers(words: &[&str], n: usize, n_words: usize, p: f64, rng: &mut impl Rng) -> Vec<String> {
    assert!(words.len() > n_words, "bench_answers needs more than n_words words");
    let start = rng.random_range(0..words.len() - n_words);
    let base = &words[start..start + n_words];
    (0..n)
        .map(|_| {
            base.iter()
                .map(|&w| {
                    if rng.random::<f64>() < p {
                        words[rng.random_range(0..words.len())]
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// ROUGE-L MBR choice for one question, what the peer times: the F1 matrix, each answer's mean
/// utility (self included; the peer's "others only" mean differs by the same constant for every
/// non-empty answer, so the argmax agrees), first argmax.
pub fn rouge_l_mbr_choice<S: AsRef<str> + Sync>(answers: &[S]) -> Option<usize> {
    let n = answers.len();
    let m = rouge_l_f1_matrix(answers);
    let scores = super::select::scores_from_matrix(&m, n).ok()?;
    super::select::first_argmax(&scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn toks(s: &str) -> Vec<String> {
        tokenize(s)
    }

    #[test]
    fn tokenizer_matches_rouge_score() {
        assert_eq!(
            toks("The cat sat on the mat."),
            ["the", "cat", "sat", "on", "the", "mat"]
        );
        assert_eq!(
            toks("Café au lait, s'il vous plaît!"),
            ["caf", "au", "lait", "s", "il", "vous", "pla", "t"]
        );
        assert!(toks("东京是日本的首都").is_empty());
        assert!(toks("  \t\n ").is_empty());
        assert_eq!(toks("$3.50 in 2024"), ["3", "50", "in", "2024"]);
        // The two non-ASCII characters whose Python lower() lands in [a-z0-9].
        assert_eq!(toks("\u{130}stanbul"), ["i", "stanbul"]);
        assert_eq!(toks("5\u{212a}m"), ["5km"]);
        // Non-ASCII digits and letters are separators.
        assert_eq!(toks("a\u{663}b\u{e9}c"), ["a", "b", "c"]);
    }

    #[test]
    fn worked_scores() {
        let s = score("The cat sat on the mat.", "the mat sat on the cat");
        assert_eq!(s.rouge1.fmeasure, 1.0);
        assert_eq!(s.rouge2.precision, 0.8);
        assert_eq!(s.rouge2.fmeasure, 0.8000000000000002); // Python's (2p)r/(p+r) rounding
        assert_eq!(s.rouge_l.fmeasure, 4.0 / 6.0);
        let e = score("", "something");
        assert_eq!(e, RougeScores::default());
        let s = score("the the the the", "the the");
        assert_eq!((s.rouge1.precision, s.rouge1.recall), (1.0, 0.5));
    }

    #[test]
    fn matrix_matches_pairwise_score() {
        let texts = [
            "Ilse Marrow designed it.",
            "",
            "It was designed by Ilse Marrow, an architect.",
            "Marrow",
            "!!!",
            "designed designed by by Ilse",
        ];
        let n = texts.len();
        let m = rouge_l_f1_matrix(&texts);
        for i in 0..n {
            for j in 0..n {
                let want = score(texts[j], texts[i]).rouge_l.fmeasure;
                assert_eq!(m[i * n + j].to_bits(), want.to_bits(), "M[{i}][{j}]");
            }
        }
        assert!(rouge_l_f1_matrix::<&str>(&[]).is_empty());
    }

    fn bits_lcs(a: &[u32], b: &[u32]) -> usize {
        let vocab = a.iter().chain(b).copied().max().map_or(0, |x| x as usize + 1);
        let mut slot = vec![0u32; vocab];
        let t = MatchTable::new(a, &mut slot);
        lcs_len_bits(&t, &slot, b, &mut Vec::new())
    }

    #[test]
    fn bit_parallel_lcs_at_word_boundaries() {
        for len in [1usize, 63, 64, 65, 127, 128, 129, 200] {
            let a: Vec<u32> = (0..len as u32).map(|k| k % 7).collect();
            let b: Vec<u32> = (0..(len as u32 + 5)).map(|k| (k * 3) % 5).collect();
            assert_eq!(bits_lcs(&a, &b), lcs_len_dp(&a, &b), "len {len}");
            assert_eq!(bits_lcs(&a, &a), len);
        }
    }

    proptest! {
        #[test]
        fn bit_parallel_lcs_equals_dp(
            a in proptest::collection::vec(0u32..6, 0..300),
            b in proptest::collection::vec(0u32..6, 0..300),
        ) {
            prop_assert_eq!(bits_lcs(&a, &b), lcs_len_dp(&a, &b));
            prop_assert_eq!(bits_lcs(&b, &a), lcs_len_dp(&a, &b));
        }
    }
}
