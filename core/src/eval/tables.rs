//! The paper's evaluation tables from per-question outcomes: SubEM × 100 per task and their
//! unweighted average (greedy decoding), and with N samples per question MBR@N (the sample MBR
//! picks), random@N and oracle@N (any sample correct), plus the oracle@k curve for k = 1..N.
//!
//! - random@N is the expected SubEM of a uniformly random sample: the mean over the question's
//!   samples (a single seeded draw would add noise to a number that estimates exactly this).
//! - oracle@k uses the unbiased pass@k estimator over the N samples,
//!   `1 - C(N - c, k) / C(N, k)` for `c` correct samples, instead of the first k samples only.
//! - Tasks are averaged without weights, as the paper's tables do.

use std::collections::BTreeMap;

/// One evaluated question.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub task: String,
    /// SubEM of the greedy answer.
    pub greedy: bool,
    /// SubEM of each of the N samples (empty without sampling).
    #[serde(default)]
    pub samples: Vec<bool>,
    /// The sample MBR picked (`None` without sampling).
    #[serde(default)]
    pub mbr_choice: Option<usize>,
}

/// SubEM × 100 of one task (or of the average over tasks).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub greedy: f64,
    pub mbr: Option<f64>,
    pub random: Option<f64>,
    pub oracle: Option<f64>,
    /// oracle@k for k = 1..=N (empty without sampling).
    pub oracle_curve: Vec<f64>,
}

/// A task's row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskRow {
    pub task: String,
    pub questions: usize,
    #[serde(flatten)]
    pub row: Row,
}

/// The table: tasks in name order and their unweighted average.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    pub tasks: Vec<TaskRow>,
    pub average: Row,
}

/// `C(n, k)` as f64 (small arguments; exact enough for ratios).
fn choose(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The probability that at least one of `k` samples drawn without replacement from `n`, of
/// which `correct` are correct, is correct.
pub fn pass_at_k(n: usize, correct: usize, k: usize) -> f64 {
    if correct == 0 || k == 0 {
        return 0.0;
    }
    if n - correct < k {
        return 1.0;
    }
    1.0 - choose(n - correct, k) / choose(n, k)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, c) = v.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
    if c == 0 { 0.0 } else { s / c as f64 }
}

fn row_of(outcomes: &[&Outcome]) -> Row {
    let pct = |x: f64| 100.0 * x;
    let greedy = pct(mean(outcomes.iter().map(|o| f64::from(u8::from(o.greedy)))));
    // The sampled figures need every question sampled with the same N.
    let n = outcomes.first().map_or(0, |o| o.samples.len());
    let sampled = n > 0 && outcomes.iter().all(|o| o.samples.len() == n);
    if !sampled {
        return Row {
            greedy,
            mbr: None,
            random: None,
            oracle: None,
            oracle_curve: Vec::new(),
        };
    }
    let correct = |o: &Outcome| o.samples.iter().filter(|&&b| b).count();
    let mbr = outcomes.iter().all(|o| o.mbr_choice.is_some_and(|c| c < n)).then(|| {
        pct(mean(outcomes.iter().map(|o| {
            f64::from(u8::from(o.mbr_choice.is_some_and(|c| o.samples[c])))
        })))
    });
    Row {
        greedy,
        mbr,
        random: Some(pct(mean(outcomes.iter().map(|o| correct(o) as f64 / n as f64)))),
        oracle: Some(pct(mean(outcomes.iter().map(|o| f64::from(u8::from(correct(o) > 0)))))),
        oracle_curve: (1..=n)
            .map(|k| pct(mean(outcomes.iter().map(|o| pass_at_k(n, correct(o), k)))))
            .collect(),
    }
}

fn average(rows: &[&Row]) -> Row {
    let avg_opt = |f: &dyn Fn(&Row) -> Option<f64>| -> Option<f64> {
        let v: Option<Vec<f64>> = rows.iter().map(|r| f(r)).collect();
        v.filter(|v| !v.is_empty()).map(|v| mean(v.into_iter()))
    };
    let k = rows.first().map_or(0, |r| r.oracle_curve.len());
    let oracle_curve = if rows.iter().all(|r| r.oracle_curve.len() == k) {
        (0..k).map(|i| mean(rows.iter().map(|r| r.oracle_curve[i]))).collect()
    } else {
        Vec::new()
    };
    Row {
        greedy: mean(rows.iter().map(|r| r.greedy)),
        mbr: avg_opt(&|r| r.mbr),
        random: avg_opt(&|r| r.random),
        oracle: avg_opt(&|r| r.oracle),
        oracle_curve,
    }
}

/// The table of `outcomes`, grouped by task.
pub fn table(outcomes: &[Outcome]) -> Table {
    let mut by_task: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        by_task.entry(o.task.as_str()).or_default().push(o);
    }
    let tasks: Vec<TaskRow> = by_task
        .into_iter()
        .map(|(task, os)| TaskRow {
            task: task.to_string(),
            questions: os.len(),
            row: row_of(&os),
        })
        .collect();
    let rows: Vec<&Row> = tasks.iter().map(|t| &t.row).collect();
    Table {
        average: average(&rows),
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(task: &str, greedy: bool, samples: &[bool], mbr: Option<usize>) -> Outcome {
        Outcome {
            task: task.into(),
            greedy,
            samples: samples.to_vec(),
            mbr_choice: mbr,
        }
    }

    #[test]
    fn pass_at_k_matches_enumeration() {
        // n = 4, c = 1: any k-subset contains the correct one with probability k / 4.
        for k in 1..=4 {
            assert!((pass_at_k(4, 1, k) - k as f64 / 4.0).abs() < 1e-12);
        }
        // n = 4, c = 2, k = 2: 1 - C(2,2)/C(4,2) = 1 - 1/6.
        assert!((pass_at_k(4, 2, 2) - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 0, 3), 0.0);
        assert_eq!(pass_at_k(4, 3, 2), 1.0);
    }

    #[test]
    fn table_per_task_and_unweighted_average() {
        let outcomes = vec![
            o("a", true, &[true, false, false, false], Some(0)),
            o("a", false, &[false, false, false, false], Some(1)),
            o("b", false, &[false, true, true, false], Some(0)),
        ];
        let t = table(&outcomes);
        assert_eq!(t.tasks.len(), 2);
        let a = &t.tasks[0].row;
        assert_eq!((t.tasks[0].task.as_str(), t.tasks[0].questions), ("a", 2));
        assert_eq!(a.greedy, 50.0);
        assert_eq!(a.mbr, Some(50.0));
        assert_eq!(a.random, Some(12.5));
        assert_eq!(a.oracle, Some(50.0));
        assert_eq!(a.oracle_curve.len(), 4);
        assert!((a.oracle_curve[0] - 12.5).abs() < 1e-9 && (a.oracle_curve[3] - 50.0).abs() < 1e-9);
        let b = &t.tasks[1].row;
        assert_eq!(
            (b.greedy, b.mbr, b.random, b.oracle),
            (0.0, Some(0.0), Some(50.0), Some(100.0))
        );
        // Unweighted: task a counts as much as task b although it has twice the questions.
        assert_eq!(t.average.greedy, 25.0);
        assert_eq!(t.average.oracle, Some(75.0));
        assert_eq!(t.average.random, Some(31.25));
    }

    #[test]
    fn greedy_only() {
        let t = table(&[o("x", true, &[], None), o("x", true, &[], None)]);
        assert_eq!(t.tasks[0].row.greedy, 100.0);
        assert_eq!((t.average.mbr, t.average.oracle), (None, None));
        assert!(t.average.oracle_curve.is_empty());
    }
}
