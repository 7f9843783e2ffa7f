//! The run report (`sealong report`): one self-contained HTML page built from the parsed contents
//! of a run directory, with inline CSS and SVG charts drawn here. No scripts, fonts or network:
//! the page's Content-Security-Policy (`default-src 'none'`, inline styles only) forbids every
//! script and fetch, and every chart element carries an SVG `<title>` so hovering shows its
//! value. Every string that came from a file is HTML-escaped.
//!
//! The edge (the CLI) reads the files into [`ReportData`]; [`render`] returns the page. Each
//! part of a run may be missing (a partial run) or unreadable; the page shows what exists and
//! says what is missing. The charts are three general functions over plain data
//! ([`chart::line_chart`], [`chart::bar_chart`], [`chart::histogram`]).

use serde::Deserialize;
use serde_json::Value;

pub mod chart;
mod page;
mod rounds;
pub mod study;
mod style;

pub use page::render;

/// The files of a run directory, relative to it, as `sealong run` writes them.
pub mod files {
    pub const CONFIG: &str = "config.toml";
    pub const QUESTIONS: &str = "questions.jsonl";
    pub const SAMPLES: &str = "samples.jsonl";
    pub const SCORED: &str = "scored.jsonl";
    pub const SCORE_SUMMARY: &str = "scored.summary.json";
    pub const TRAIN_METRICS: &str = "train/metrics.jsonl";
    pub const EVAL_BEFORE: &str = "eval/before/metrics.json";
    pub const EVAL_AFTER: &str = "eval/after/metrics.json";
    /// The short-context check (`[eval] short`, `short_inputs`), when the run has one.
    pub const EVAL_SHORT_BEFORE: &str = "eval/before_short/metrics.json";
    pub const EVAL_SHORT_AFTER: &str = "eval/after_short/metrics.json";
    pub const RUN_SUMMARY: &str = "summary.json";
    /// `sealong study round`'s tables, which `sealong run` writes before its report.
    pub const EFFECTS: &str = "effects/study.json";
    /// Where the report goes by default.
    pub const REPORT: &str = "report.html";
}

/// What became of one file of the run directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Part<T> {
    /// The file does not exist (the stage has not run yet).
    #[default]
    Missing,
    /// The file exists but could not be used; the message says why (file and line).
    Unreadable(String),
    Loaded(T),
}

impl<T> Part<T> {
    /// The loaded value, if any.
    pub fn get(&self) -> Option<&T> {
        match self {
            Part::Loaded(v) => Some(v),
            _ => None,
        }
    }
}

/// A label field of any JSON type as text (`null` is none), so an unexpected type in a field
/// that is only displayed does not make the whole file unreadable.
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// One record of `scored.jsonl`, the fields the report uses (everything else is ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ScoredRecord {
    /// The MBR score of each sample (`null` for a non-finite score).
    pub scores: Vec<Option<f64>>,
    pub chosen: Option<usize>,
    pub rejected: Option<usize>,
    /// SubEM of each sample, when the question has gold answers.
    pub sub_em: Option<Vec<bool>>,
    #[serde(deserialize_with = "lenient_string")]
    pub method: Option<String>,
}

/// What the report shows of the scored file: score distributions and SubEM rates (x 100).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredStats {
    pub questions: usize,
    pub samples: usize,
    /// The scoring method of the last record that names one.
    pub method: Option<String>,
    /// Finite scores of the chosen samples, the rejected samples, and all others.
    pub chosen_scores: Vec<f64>,
    pub rejected_scores: Vec<f64>,
    pub other_scores: Vec<f64>,
    /// Questions whose `sub_em` list matches their samples.
    pub with_gold: usize,
    /// Mean over questions of the per-question mean SubEM over samples.
    pub sub_em_all: Option<f64>,
    pub sub_em_chosen: Option<f64>,
    pub sub_em_rejected: Option<f64>,
    /// Any sample correct (oracle@N).
    pub sub_em_oracle: Option<f64>,
}

impl ScoredStats {
    /// Reduces scored records. Indices out of range are ignored; a sample that is both chosen
    /// and rejected (N = 1) counts as chosen.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a ScoredRecord>) -> Self {
        let mut st = ScoredStats::default();
        let mut sums = [0.0f64; 4];
        for r in records {
            st.questions += 1;
            st.samples += r.scores.len();
            if let Some(m) = &r.method {
                st.method = Some(m.clone());
            }
            for (i, s) in r.scores.iter().enumerate() {
                let Some(s) = s.filter(|s| s.is_finite()) else {
                    continue;
                };
                if r.chosen == Some(i) {
                    st.chosen_scores.push(s);
                } else if r.rejected == Some(i) {
                    st.rejected_scores.push(s);
                } else {
                    st.other_scores.push(s);
                }
            }
            let Some(sub) = r.sub_em.as_ref().filter(|s| !s.is_empty() && s.len() == r.scores.len()) else {
                continue;
            };
            let (Some(c), Some(j)) = (
                r.chosen.filter(|&c| c < sub.len()),
                r.rejected.filter(|&j| j < sub.len()),
            ) else {
                continue;
            };
            let f = |b: bool| f64::from(u8::from(b));
            st.with_gold += 1;
            sums[0] += sub.iter().map(|&b| f(b)).sum::<f64>() / sub.len() as f64;
            sums[1] += f(sub[c]);
            sums[2] += f(sub[j]);
            sums[3] += f(sub.iter().any(|&b| b));
        }
        if st.with_gold > 0 {
            let pct = |s: f64| Some(s / st.with_gold as f64 * 100.0);
            st.sub_em_all = pct(sums[0]);
            st.sub_em_chosen = pct(sums[1]);
            st.sub_em_rejected = pct(sums[2]);
            st.sub_em_oracle = pct(sums[3]);
        }
        st
    }
}

/// `scored.summary.json` (`sealong score`'s summary; SubEM values x 100).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ScoreSummary {
    #[serde(deserialize_with = "lenient_string")]
    pub method: Option<String>,
    pub questions: Option<u64>,
    pub questions_with_gold: Option<u64>,
    pub sub_em_max: Option<f64>,
    pub sub_em_random: Option<f64>,
    pub sub_em_average: Option<f64>,
    pub sub_em_prediction: Option<f64>,
    pub sub_em_chosen: Option<f64>,
    pub sub_em_rejected: Option<f64>,
}

/// One line of `train/metrics.jsonl` (the trainer's `StepMetrics`), every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrainStep {
    pub step: Option<f64>,
    pub total_steps: Option<f64>,
    pub epoch: Option<f64>,
    pub lr: Option<f64>,
    pub loss: Option<f64>,
    pub nll: Option<f64>,
    pub chosen_reward: Option<f64>,
    pub rejected_reward: Option<f64>,
    pub reward_accuracy: Option<f64>,
    pub margin: Option<f64>,
    pub log_odds: Option<f64>,
    pub grad_norm: Option<f64>,
    pub pairs: Option<f64>,
    pub tokens: Option<f64>,
    pub step_seconds: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

/// SubEM x 100 of one task (or the average over tasks) in `eval/*/metrics.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TaskScores {
    pub task: String,
    pub questions: Option<u64>,
    pub greedy: Option<f64>,
    pub mbr: Option<f64>,
    pub random: Option<f64>,
    pub oracle: Option<f64>,
    /// oracle@k for k = 1..n.
    pub oracle_curve: Vec<Option<f64>>,
}

/// `eval/{before,after}/metrics.json` (`sealong eval`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EvalMetrics {
    #[serde(deserialize_with = "lenient_string")]
    pub model: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub adapter: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub strategy: Option<String>,
    pub n: Option<u64>,
    pub max_new_tokens: Option<u64>,
    pub tasks: Vec<TaskScores>,
    pub average: Option<TaskScores>,
}

/// Everything the report shows, as read from a run directory.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    /// The run directory as the user named it (shown in the heading).
    pub run_dir: String,
    /// The run's config (TOML text).
    pub config: Part<String>,
    /// Records in `questions.jsonl`.
    pub questions: Part<usize>,
    /// Records in `samples.jsonl`.
    pub samples: Part<usize>,
    pub scored: Part<ScoredStats>,
    pub score_summary: Part<ScoreSummary>,
    pub train: Part<Vec<TrainStep>>,
    pub eval_before: Part<EvalMetrics>,
    pub eval_after: Part<EvalMetrics>,
    /// `round-k/eval/after/metrics.json` for k = 2, 3, ... (`rounds = K`); empty for one round.
    pub later_rounds: Vec<Part<EvalMetrics>>,
    /// The short-context check before and after (both `Missing` when the run has none).
    pub eval_short_before: Part<EvalMetrics>,
    pub eval_short_after: Part<EvalMetrics>,
    /// `summary.json`, shown as a table whatever its shape.
    pub run_summary: Part<Value>,
    /// `effects/study.json`: the before/after and scorer differences with paired intervals
    /// (`Missing` for runs made before it, or before its stage).
    pub effects: Part<crate::eval::study::Study>,
    /// Problems that did not stop a file from being used (e.g. a skipped malformed line).
    pub warnings: Vec<String>,
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How often `needle` occurs in `hay` (the tests count SVG and HTML elements).
#[cfg(test)]
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ü"), "plain ü");
    }

    #[test]
    fn scored_stats_reduce_records() {
        let recs = vec![
            ScoredRecord {
                scores: vec![Some(0.9), Some(0.1), Some(0.5), None],
                chosen: Some(0),
                rejected: Some(1),
                sub_em: Some(vec![true, false, true, false]),
                method: Some("embedding".into()),
            },
            ScoredRecord {
                scores: vec![Some(0.4), Some(0.6)],
                chosen: Some(1),
                rejected: Some(0),
                sub_em: None,
                method: None,
            },
        ];
        let s = ScoredStats::from_records(&recs);
        assert_eq!((s.questions, s.samples, s.with_gold), (2, 6, 1));
        assert_eq!(s.chosen_scores, vec![0.9, 0.6]);
        assert_eq!(s.rejected_scores, vec![0.1, 0.4]);
        assert_eq!(s.other_scores, vec![0.5]);
        assert_eq!(s.sub_em_all, Some(50.0));
        assert_eq!(
            (s.sub_em_chosen, s.sub_em_rejected, s.sub_em_oracle),
            (Some(100.0), Some(0.0), Some(100.0))
        );
        assert_eq!(s.method.as_deref(), Some("embedding"));
    }

    #[test]
    fn label_fields_accept_any_json() {
        let m: EvalMetrics = serde_json::from_str(
            r#"{"model": {"path": "m.gguf"}, "adapter": null, "strategy": 3, "tasks": [{"task": "t", "greedy": 1.5, "mbr": null, "oracle_curve": [1.0, null]}]}"#,
        )
        .expect("parse");
        assert_eq!(m.model.as_deref(), Some(r#"{"path":"m.gguf"}"#));
        assert_eq!((m.adapter, m.strategy.as_deref()), (None, Some("3")));
        assert_eq!(m.tasks[0].oracle_curve, vec![Some(1.0), None]);
        assert!(m.average.is_none());
    }
}
