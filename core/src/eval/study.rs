//! The studies of `sealong study` as pure functions from per-question outcomes to tables with
//! bootstrap confidence intervals (the command reads the files, runs the models and writes).
//!
//! - A table's rows are methods (a scorer, a strategy, MBR@k, oracle@k), its columns the tasks
//!   and their unweighted average; every cell is SubEM × 100 with its bootstrap 95% interval
//!   ([`bootstrap::mean_ci`], [`bootstrap::DEFAULT_RESAMPLES`] unless asked, a fixed seed).
//! - A row marked for comparison also carries the paired bootstrap of its difference with the
//!   table's baseline row over the same questions ([`bootstrap::paired`]): the difference, its
//!   interval and the share of resamples in which it is ≤ 0 (a one-sided p for "better").
//! - The average column is the unweighted mean of the task means. Its interval resamples the
//!   questions of all tasks together, each question's value weighted by `Q / (T · n_t)` (Q
//!   questions, T tasks, n_t in its task), so the mean of the weighted values is exactly the
//!   average of the task means.
//! - Every row of a table must hold the same questions per task (and every file of a study);
//!   [`same_questions`] refuses others, naming the ids.
//! - MBR@k ([`mbr_at_k`]) is MBR over k-subsets of a question's N samples: every subset when
//!   there are at most `count` of them (so MBR@N is the one full set, MBR@1 the mean of the
//!   samples), else `count` uniform draws from the caller's seeded stream; the question's value
//!   is the mean SubEM of the subsets' picks. oracle@k is the unbiased pass@k estimator of
//!   [`tables`](super::tables).

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::bootstrap;
use crate::error::{Error, Result};

/// Per-question values in [0, 1] (SubEM, or an expected SubEM) of one row: task → question id
/// → value.
pub type Values = BTreeMap<String, BTreeMap<String, f64>>;

/// One row to tabulate.
#[derive(Debug, Clone)]
pub struct RowInput {
    pub name: String,
    /// The curve the row belongs to and its k (`study n`: "MBR" and "oracle" at k), for charts.
    pub curve: Option<(String, usize)>,
    pub values: Values,
    /// Whether the row is compared with the baseline row (paired bootstrap).
    pub compare: bool,
}

impl RowInput {
    pub fn new(name: impl Into<String>, values: Values) -> RowInput {
        RowInput {
            name: name.into(),
            curve: None,
            values,
            compare: false,
        }
    }

    pub fn compared(mut self) -> RowInput {
        self.compare = true;
        self
    }

    pub fn on_curve(mut self, curve: &str, k: usize) -> RowInput {
        self.curve = Some((curve.to_string(), k));
        self
    }
}

/// A paired comparison with the baseline, × 100.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Mean difference row − baseline.
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    /// Share of resamples in which the difference is ≤ 0.
    pub p_not_better: f64,
}

impl Comparison {
    /// `p=0.123`, or `p<0.001` when no more than one resample in 2,000 showed no gain (printed
    /// to three places, such a share would read as an impossible 0.000).
    pub fn p_text(&self) -> String {
        if self.p_not_better < 0.0005 {
            "p<0.001".into()
        } else {
            format!("p={:.3}", self.p_not_better)
        }
    }
}

/// One number of a table, × 100, with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub questions: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_baseline: Option<Comparison>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<(String, usize)>,
    /// One cell per column.
    pub cells: Vec<Cell>,
}

/// Rows × (tasks in name order, then "average").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub columns: Vec<String>,
    /// The row the compared rows are measured against.
    pub baseline: Option<String>,
    pub rows: Vec<Row>,
}

/// The column name of the unweighted average over tasks.
pub const AVERAGE: &str = "average";

/// One table of a study with its heading and notes (a file of `study n`, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub label: String,
    pub table: Table,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A whole study as `study.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// `n`, `scorers` or `prompts`.
    pub study: String,
    pub title: String,
    /// What it was run with (inputs, method, seeds, resamples, subsets...).
    pub settings: serde_json::Value,
    pub parts: Vec<Part>,
}

/// The questions of a row or file: task → ids.
pub type Questions = BTreeMap<String, BTreeSet<String>>;

pub fn questions_of<T>(v: &BTreeMap<String, BTreeMap<String, T>>) -> Questions {
    v.iter()
        .map(|(t, q)| (t.clone(), q.keys().cloned().collect()))
        .collect()
}

fn some_ids<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    let ids: Vec<&String> = ids.collect();
    let shown: Vec<String> = ids.iter().take(8).map(|i| format!("{i:?}")).collect();
    let more = ids.len().saturating_sub(8);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Refuses two sets of questions that differ, naming per task the ids only one side has (`a`
/// and `b` name the sides: files, rows).
pub fn same_questions(a_name: &str, a: &Questions, b_name: &str, b: &Questions) -> Result<()> {
    let mut problems = Vec::new();
    let tasks: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let empty = BTreeSet::new();
    for t in tasks {
        let (qa, qb) = (a.get(t).unwrap_or(&empty), b.get(t).unwrap_or(&empty));
        let only_a: Vec<&String> = qa.difference(qb).collect();
        let only_b: Vec<&String> = qb.difference(qa).collect();
        if !only_a.is_empty() {
            problems.push(format!(
                "task {t:?}: only in {a_name}: {}",
                some_ids(only_a.into_iter())
            ));
        }
        if !only_b.is_empty() {
            problems.push(format!(
                "task {t:?}: only in {b_name}: {}",
                some_ids(only_b.into_iter())
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{a_name} and {b_name} differ in questions (a study compares the same questions); {}",
            problems.join("; ")
        )))
    }
}

/// The values of `v` in the order of `q` (task by task, ids in order), each weighted for the
/// unweighted average over tasks.
fn weighted_flat(v: &Values, q: &Questions) -> Vec<f64> {
    let total: usize = q.values().map(BTreeSet::len).sum();
    let tasks = q.len();
    let mut out = Vec::with_capacity(total);
    for (t, ids) in q {
        let w = total as f64 / (tasks as f64 * ids.len() as f64);
        out.extend(ids.iter().map(|id| w * v[t][id]));
    }
    out
}

fn task_values(v: &Values, task: &str, ids: &BTreeSet<String>) -> Vec<f64> {
    ids.iter().map(|id| v[task][id]).collect()
}

fn pct(i: bootstrap::Interval) -> (f64, f64, f64) {
    (100.0 * i.mean, 100.0 * i.lo, 100.0 * i.hi)
}

/// The table of `rows` (each with the same questions; an error names the ids otherwise). The
/// rows marked `compare` are compared with the row named `baseline`.
pub fn table(rows: &[RowInput], baseline: Option<&str>, resamples: usize, seed: u64) -> Result<Table> {
    let first = rows
        .first()
        .ok_or_else(|| Error::Invalid("a study table needs at least one row".into()))?;
    let q = questions_of(&first.values);
    if q.is_empty() || q.values().any(BTreeSet::is_empty) {
        return Err(Error::Invalid(format!("row {:?} has no questions", first.name)));
    }
    for r in &rows[1..] {
        same_questions(
            &format!("row {:?}", first.name),
            &q,
            &format!("row {:?}", r.name),
            &questions_of(&r.values),
        )?;
    }
    if let Some((r, v)) = rows
        .iter()
        .flat_map(|r| r.values.values().flat_map(|m| m.values()).map(move |v| (r, v)))
        .find(|(_, v)| !v.is_finite())
    {
        return Err(Error::Invalid(format!("row {:?} has a non-finite value {v}", r.name)));
    }
    let base = match baseline {
        Some(b) => Some(
            rows.iter()
                .find(|r| r.name == b)
                .ok_or_else(|| Error::Invalid(format!("the baseline row {b:?} is not in the table")))?,
        ),
        None => None,
    };
    let mut columns: Vec<String> = q.keys().cloned().collect();
    columns.push(AVERAGE.to_string());
    // Per column: the values of a row as the bootstrap sees them.
    let column_values = |v: &Values, col: usize| -> Vec<f64> {
        match q.iter().nth(col) {
            Some((t, ids)) => task_values(v, t, ids),
            None => weighted_flat(v, &q),
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut cells = Vec::with_capacity(columns.len());
        for col in 0..columns.len() {
            let x = column_values(&r.values, col);
            let ci = bootstrap::mean_ci(&x, resamples, seed)
                .ok_or_else(|| Error::Invalid(format!("row {:?}: no questions", r.name)))?;
            let (mean, lo, hi) = pct(ci);
            let vs_baseline = match base {
                Some(b) if r.compare && b.name != r.name => {
                    let p = bootstrap::paired(&x, &column_values(&b.values, col), resamples, seed)?;
                    let (diff, lo, hi) = pct(p.diff);
                    Some(Comparison {
                        diff,
                        lo,
                        hi,
                        p_not_better: p.p_not_better,
                    })
                }
                _ => None,
            };
            cells.push(Cell {
                mean,
                lo,
                hi,
                questions: x.len(),
                vs_baseline,
            });
        }
        out.push(Row {
            name: r.name.clone(),
            curve: r.curve.clone(),
            cells,
        });
    }
    Ok(Table {
        columns,
        baseline: base.map(|b| b.name.clone()),
        rows: out,
    })
}

/// One question with N samples, as `study n` and `study scorers` read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub task: String,
    pub id: String,
    pub greedy: bool,
    /// The metric (SubEM) of each sample.
    pub samples: Vec<bool>,
}

impl AsRef<Sampled> for Sampled {
    fn as_ref(&self) -> &Sampled {
        self
    }
}

/// A row's values from one number per question (`questions`: [`Sampled`], or records that
/// carry one with more beside it).
pub fn values_of<T: AsRef<Sampled>>(questions: &[T], f: impl Fn(&T) -> f64) -> Values {
    let mut v = Values::new();
    for item in questions {
        let q = item.as_ref();
        v.entry(q.task.clone()).or_default().insert(q.id.clone(), f(item));
    }
    v
}

/// The expected SubEM of a uniformly random sample (random@N): the mean over the samples.
pub fn random_value(q: &Sampled) -> f64 {
    if q.samples.is_empty() {
        return 0.0;
    }
    q.samples.iter().filter(|&&b| b).count() as f64 / q.samples.len() as f64
}

/// oracle@k of one question: the unbiased pass@k estimator over its N samples.
pub fn oracle_at_k(q: &Sampled, k: usize) -> f64 {
    let c = q.samples.iter().filter(|&&b| b).count();
    super::tables::pass_at_k(q.samples.len(), c, k)
}

/// `C(n, k)`, saturating.
fn binomial(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        c = c.saturating_mul((n - i) as u128) / (i as u128 + 1);
    }
    c
}

/// The k-subsets of 0..n a question's MBR@k is averaged over, each in ascending order: all of
/// them (lexicographic) when there are at most `count`, else `count` uniform draws from `rng`
/// (a partial Fisher-Yates shuffle each).
pub fn k_subsets(n: usize, k: usize, count: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    if k == 0 || k > n {
        return Vec::new();
    }
    if binomial(n, k) <= count as u128 {
        let mut out = Vec::new();
        let mut s: Vec<usize> = (0..k).collect();
        loop {
            out.push(s.clone());
            // The next combination in lexicographic order.
            let Some(i) = (0..k).rev().find(|&i| s[i] < n - k + i) else {
                break;
            };
            s[i] += 1;
            for j in i + 1..k {
                s[j] = s[j - 1] + 1;
            }
        }
        return out;
    }
    (0..count.max(1))
        .map(|_| {
            let mut idx: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = rng.random_range(i..n);
                idx.swap(i, j);
            }
            let mut s = idx[..k].to_vec();
            s.sort_unstable();
            s
        })
        .collect()
}

/// The `k × k` part of the row-major `n × n` matrix `m` on `subset`'s rows and columns.
pub fn sub_matrix(m: &[f64], n: usize, subset: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(subset.len() * subset.len());
    for &i in subset {
        out.extend(subset.iter().map(|&j| m[i * n + j]));
    }
    out
}

/// MBR@k of one question: the mean SubEM of the sample `pick` chooses in each subset, given the
/// question's `n × n` utility `matrix`. `pick` gets the subset's `k × k` matrix and returns an
/// index into the subset (the CLI passes MBR's select step); a one-sample subset picks itself.
pub fn mbr_at_k(
    q: &Sampled,
    matrix: &[f64],
    subsets: &[Vec<usize>],
    pick: &dyn Fn(&[f64], usize) -> Result<usize>,
) -> Result<f64> {
    let n = q.samples.len();
    if matrix.len() != n * n {
        return Err(Error::Invalid(format!(
            "question {:?}: a utility matrix of {} values for {n} samples",
            q.id,
            matrix.len()
        )));
    }
    if subsets.is_empty() {
        return Err(Error::Invalid(format!("question {:?}: no subsets to pick from", q.id)));
    }
    let mut correct = 0usize;
    for s in subsets {
        let chosen = if s.len() == 1 {
            s[0]
        } else {
            let c = pick(&sub_matrix(matrix, n, s), s.len())?;
            *s.get(c)
                .ok_or_else(|| Error::Invalid(format!("question {:?}: picked {c} of {} answers", q.id, s.len())))?
        };
        correct += usize::from(q.samples[chosen]);
    }
    Ok(correct as f64 / subsets.len() as f64)
}

/// A table as markdown: each cell `mean [lo, hi]`, then the compared rows' differences.
pub fn markdown_table(t: &Table) -> String {
    let mut s = String::new();
    s.push_str(&format!("| | {} |\n", t.columns.join(" | ")));
    s.push_str(&format!("|---|{}\n", "---:|".repeat(t.columns.len())));
    for r in &t.rows {
        let cells: Vec<String> = r
            .cells
            .iter()
            .map(|c| format!("{:.1} [{:.1}, {:.1}]", c.mean, c.lo, c.hi))
            .collect();
        s.push_str(&format!("| {} | {} |\n", r.name, cells.join(" | ")));
    }
    let compared: Vec<&Row> = t
        .rows
        .iter()
        .filter(|r| r.cells.iter().any(|c| c.vs_baseline.is_some()))
        .collect();
    if let (Some(base), false) = (&t.baseline, compared.is_empty()) {
        s.push_str(&format!(
            "\nPaired bootstrap against {base}: difference [95% CI], p = share of resamples with no gain\n\n"
        ));
        s.push_str(&format!("| | {} |\n", t.columns.join(" | ")));
        s.push_str(&format!("|---|{}\n", "---:|".repeat(t.columns.len())));
        for r in compared {
            let cells: Vec<String> = r
                .cells
                .iter()
                .map(|c| match c.vs_baseline {
                    Some(d) => format!("{:+.1} [{:+.1}, {:+.1}] {}", d.diff, d.lo, d.hi, d.p_text()),
                    None => "–".into(),
                })
                .collect();
            s.push_str(&format!("| {} − {base} | {} |\n", r.name, cells.join(" | ")));
        }
    }
    s
}

/// The whole study as markdown (`study.md`).
pub fn markdown(study: &Study) -> String {
    let mut s = format!(
        "# {}\n\nSubEM × 100 with bootstrap 95% intervals [lo, hi].\n",
        study.title
    );
    for p in &study.parts {
        s.push_str(&format!("\n## {}\n\n", p.label));
        for n in &p.notes {
            s.push_str(&format!("- {n}\n"));
        }
        if !p.notes.is_empty() {
            s.push('\n');
        }
        s.push_str(&markdown_table(&p.table));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn q(task: &str, id: &str, samples: &[bool]) -> Sampled {
        Sampled {
            task: task.into(),
            id: id.into(),
            greedy: false,
            samples: samples.to_vec(),
        }
    }

    /// Row means and the first argmax: MBR's select step without numpy's summation order.
    fn first_best(m: &[f64], k: usize) -> Result<usize> {
        let scores: Vec<f64> = m.chunks(k).map(|r| r.iter().sum::<f64>() / k as f64).collect();
        let mut best = 0;
        for (i, &s) in scores.iter().enumerate() {
            if s > scores[best] {
                best = i;
            }
        }
        Ok(best)
    }

    #[test]
    fn subsets_are_all_combinations_when_few_and_seeded_draws_otherwise() {
        let mut r = rng::for_item(1, "q#mbr@2");
        let all = k_subsets(4, 2, 6, &mut r);
        assert_eq!(all, [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]);
        assert_eq!(k_subsets(4, 4, 1, &mut r), [[0, 1, 2, 3]]);
        assert_eq!(k_subsets(3, 1, 8, &mut r), [[0], [1], [2]]);
        let drawn = k_subsets(8, 4, 10, &mut rng::for_item(1, "q#mbr@4"));
        assert_eq!(drawn.len(), 10);
        for s in &drawn {
            assert_eq!(s.len(), 4);
            assert!(s.windows(2).all(|w| w[0] < w[1]) && s[3] < 8, "{s:?}");
        }
        assert_eq!(drawn, k_subsets(8, 4, 10, &mut rng::for_item(1, "q#mbr@4")));
        assert_ne!(drawn, k_subsets(8, 4, 10, &mut rng::for_item(2, "q#mbr@4")));
        assert!(k_subsets(3, 4, 5, &mut r).is_empty());
        assert_eq!(binomial(8, 4), 70);
    }

    #[test]
    fn mbr_at_k_by_hand() {
        // Samples 0 and 1 agree (utility 1), sample 2 is alone; only sample 2 is correct.
        let m = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let x = q("t", "a", &[false, false, true]);
        let r = &mut rng::for_item(0, "x");
        // k = 3: the consensus (sample 0) is picked: wrong.
        assert_eq!(mbr_at_k(&x, &m, &k_subsets(3, 3, 10, r), &first_best).expect("k3"), 0.0);
        // k = 2: {0,1} picks 0 (wrong); {0,2} and {1,2} tie, the first wins: wrong. 0 of 3.
        assert_eq!(mbr_at_k(&x, &m, &k_subsets(3, 2, 10, r), &first_best).expect("k2"), 0.0);
        // k = 1: each sample alone: the mean of the samples.
        let one = mbr_at_k(&x, &m, &k_subsets(3, 1, 10, r), &first_best).expect("k1");
        assert!((one - random_value(&x)).abs() < 1e-12);
        // Sample 0 correct instead: k = 2 picks 0, 0, 1: two of three.
        let y = q("t", "b", &[true, false, false]);
        let two = mbr_at_k(&y, &m, &k_subsets(3, 2, 10, r), &first_best).expect("k2");
        assert!((two - 2.0 / 3.0).abs() < 1e-12);
        assert!(mbr_at_k(&y, &m[..4], &k_subsets(3, 2, 10, r), &first_best).is_err());
        assert_eq!(sub_matrix(&m, 3, &[0, 2]), [1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn oracle_at_k_matches_the_tables_curve() {
        let qs = vec![
            q("a", "1", &[true, false, false, false]),
            q("a", "2", &[false, false, false, false]),
            q("b", "3", &[false, true, true, false]),
        ];
        let outcomes: Vec<super::super::tables::Outcome> = qs
            .iter()
            .map(|x| super::super::tables::Outcome {
                task: x.task.clone(),
                greedy: x.greedy,
                samples: x.samples.clone(),
                mbr_choice: Some(0),
            })
            .collect();
        let want = super::super::tables::table(&outcomes);
        let rows: Vec<RowInput> = (1..=4)
            .map(|k| RowInput::new(format!("oracle@{k}"), values_of(&qs, |x| oracle_at_k(x, k))).on_curve("oracle", k))
            .collect();
        let t = table(&rows, None, 200, 1).expect("table");
        assert_eq!(t.columns, ["a", "b", AVERAGE]);
        for k in 0..4 {
            for (c, task) in want.tasks.iter().enumerate() {
                assert!((t.rows[k].cells[c].mean - task.row.oracle_curve[k]).abs() < 1e-9);
            }
            assert!((t.rows[k].cells[2].mean - want.average.oracle_curve[k]).abs() < 1e-9);
        }
        let random = table(&[RowInput::new("random", values_of(&qs, random_value))], None, 200, 1).expect("random");
        assert!((random.rows[0].cells[2].mean - want.average.random.expect("random")).abs() < 1e-9);
    }

    #[test]
    fn cells_contain_their_means_and_identical_rows_differ_by_zero() {
        let qs: Vec<Sampled> = (0..40)
            .map(|i| {
                q(
                    if i < 10 { "small" } else { "big" },
                    &i.to_string(),
                    &[i % 3 == 0, i % 2 == 0],
                )
            })
            .collect();
        let a = values_of(&qs, random_value);
        let rows = vec![
            RowInput::new("random", a.clone()),
            RowInput::new("same", a.clone()).compared(),
            RowInput::new("oracle", values_of(&qs, |x| oracle_at_k(x, 2))).compared(),
        ];
        let t = table(&rows, Some("random"), 1000, 7).expect("table");
        assert_eq!(t.baseline.as_deref(), Some("random"));
        for r in &t.rows {
            for c in &r.cells {
                assert!(c.lo <= c.mean && c.mean <= c.hi, "{r:?}");
            }
        }
        // The average is unweighted: the mean of the two task means, though "big" has 3x the questions.
        let cells = &t.rows[0].cells;
        assert!((cells[2].mean - (cells[0].mean + cells[1].mean) / 2.0).abs() < 1e-9);
        assert_eq!(cells[2].questions, 40);
        assert!(t.rows[0].cells.iter().all(|c| c.vs_baseline.is_none()));
        for c in &t.rows[1].cells {
            let d = c.vs_baseline.expect("compared");
            assert_eq!((d.diff, d.lo, d.hi, d.p_not_better), (0.0, 0.0, 0.0, 1.0));
        }
        // oracle@2 ≥ random on every question: a gain with p ≤ the share of no-gain resamples.
        let d = t.rows[2].cells[2].vs_baseline.expect("compared");
        assert!(d.diff > 0.0 && d.lo > 0.0 && d.p_not_better < 0.05, "{d:?}");
        let p = |p_not_better| {
            Comparison {
                diff: 1.0,
                lo: 0.5,
                hi: 1.5,
                p_not_better,
            }
            .p_text()
        };
        assert_eq!(
            (p(0.0), p(0.0004), p(0.0005), p(0.25)),
            ("p<0.001".into(), "p<0.001".into(), "p=0.001".into(), "p=0.250".into())
        );
        // Same seed, same table.
        assert_eq!(t, table(&rows, Some("random"), 1000, 7).expect("again"));
        let md = markdown_table(&t);
        assert!(
            md.contains("| random | ") && md.contains("| same − random | +0.0 [+0.0, +0.0] p=1.000"),
            "{md}"
        );
    }

    #[test]
    fn rows_or_files_with_other_questions_are_refused_naming_the_ids() {
        let qs = vec![q("a", "1", &[true]), q("a", "2", &[false]), q("b", "3", &[true])];
        let other = vec![q("a", "1", &[true]), q("a", "9", &[false]), q("c", "4", &[true])];
        let rows = vec![
            RowInput::new("x", values_of(&qs, random_value)),
            RowInput::new("y", values_of(&other, random_value)),
        ];
        let e = table(&rows, None, 10, 1).expect_err("refused").to_string();
        for part in [
            "task \"a\": only in row \"x\": \"2\"",
            "task \"a\": only in row \"y\": \"9\"",
            "task \"b\": only in row \"x\": \"3\"",
            "task \"c\": only in row \"y\": \"4\"",
        ] {
            assert!(e.contains(part), "{part} in {e}");
        }
        assert!(table(&rows[..1], Some("z"), 10, 1).is_err());
        assert!(table(&[], None, 10, 1).is_err());
        let many: Questions = [("t".to_string(), (0..20).map(|i| format!("q{i:02}")).collect())].into();
        let e = same_questions("f1", &many, "f2", &Questions::new())
            .expect_err("differ")
            .to_string();
        assert!(e.contains("\"q07\" and 12 more") && !e.contains("q08"), "{e}");
    }
}
