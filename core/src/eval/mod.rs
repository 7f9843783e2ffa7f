//! Evaluation: the metrics (SubEM; LongBench-v2's multiple-choice letter; GSM8K's numeric final
//! answer) and the paper's tables (greedy, MBR@N, random@N, oracle@N).

pub mod bootstrap;
pub mod choice;
pub mod numeric;
pub mod report;
pub mod study;
pub mod subem;
pub mod tables;

pub use subem::{normalize, sub_em};

/// The metric of a question, by the kind of its gold answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// SubEM against any gold answer.
    SubEm,
    /// The extracted letter equals the gold letter ([`choice`]).
    Choice,
    /// The output's last number equals the gold number ([`numeric`]).
    Numeric,
}

impl Metric {
    /// Whether `prediction` is correct against `golds` (for `Choice` and `Numeric`: any of them).
    pub fn score<S: AsRef<str>>(self, prediction: &str, golds: &[S]) -> bool {
        match self {
            Metric::SubEm => sub_em(prediction, golds),
            Metric::Choice => golds.iter().any(|g| choice::correct(prediction, g.as_ref())),
            Metric::Numeric => golds.iter().any(|g| numeric::correct(prediction, g.as_ref())),
        }
    }

    /// What the metric read from the prediction (the letter, the number); `None` for SubEM,
    /// which reads the whole text.
    pub fn extracted(self, prediction: &str) -> Option<String> {
        match self {
            Metric::SubEm => None,
            Metric::Choice => choice::extract(prediction).map(String::from),
            Metric::Numeric => numeric::last_number(prediction),
        }
    }
}
