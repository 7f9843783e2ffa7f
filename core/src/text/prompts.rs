//! SEALONG's prompts, verbatim from the official code (`prompts.py`): the five answer
//! strategies, the long-context user message, the passage layout, and the two self-evaluation
//! prompts used as scorers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::text::pystr;

/// How the model is asked to answer (the suffix after the question).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Default,
    DirectAnswer,
    StepByStep,
    FactAndReflection,
    /// The paper's choice for sampling, training data and evaluation.
    #[default]
    PlanAndSolve,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Default,
        Strategy::DirectAnswer,
        Strategy::StepByStep,
        Strategy::FactAndReflection,
        Strategy::PlanAndSolve,
    ];

    /// The text appended after the question (ASCII apostrophes, as in `prompts.py`).
    pub fn suffix(self) -> &'static str {
        match self {
            Strategy::Default => "",
            Strategy::DirectAnswer => "Let's answer the question directly.",
            Strategy::StepByStep => "Let's think step by step.",
            Strategy::FactAndReflection => {
                "Let's first identify the relevant information from the long context and list it. Then, carry out step-by-step reasoning based on that information, and finally, provide the answer."
            }
            Strategy::PlanAndSolve => {
                "Let's first understand the problem and devise a plan to solve it. Then, let's carry out the plan and solve the problem step-by-step."
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Default => "default",
            Strategy::DirectAnswer => "direct_answer",
            Strategy::StepByStep => "step_by_step",
            Strategy::FactAndReflection => "fact_and_reflection",
            Strategy::PlanAndSolve => "plan_and_solve",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Strategy::ALL.into_iter().find(|st| st.name() == s).ok_or_else(|| {
            let names: Vec<_> = Strategy::ALL.iter().map(|s| s.name()).collect();
            Error::Invalid(format!(
                "unknown strategy {s:?} (expected one of: {})",
                names.join(", ")
            ))
        })
    }
}

/// The user message: `"\n{context}\n\n{input}\n"` with `input = (question + "\n" + SUFFIX).strip()`
/// (`prompts.py` `PROMPTS["eval_longbench_qa"]`). No system message is added.
pub fn user_message(context: &str, question: &str, strategy: Strategy) -> String {
    let input = format!("{question}\n{}", strategy.suffix());
    format!("\n{context}\n\n{}\n", pystr::strip(&input))
}

/// Joins passages the way `process_data.py` does: each `("Passage {i}:\n" + text).strip() + "\n"`
/// (1-based), then the whole string stripped.
pub fn passages_context<S: AsRef<str>>(passages: &[S]) -> String {
    let mut out = String::new();
    for (i, text) in passages.iter().enumerate() {
        out.push_str(pystr::strip(&format!("Passage {}:\n{}", i + 1, text.as_ref())));
        out.push('\n');
    }
    pystr::strip(&out).to_string()
}

/// Reference-free self-evaluation prompt (paper Tab. 10): the judge rates one answer 1..5 as
/// `[[n]]`.
pub fn reference_free_evaluation(context: &str, question: &str, prediction: &str) -> String {
    format!(
        "\n[Context]\n{context}\n\n[Question]\n{question}\n\n[Predicted Response]\n{prediction}\n\n\
         Please evaluate the correctness of the predicted response based on the context and the question. \
         Begin your evaluation by providing a brief explanation. Be as objective as possible. After giving \
         your explanation, you must rate the response on a scale from 1 to 5, following this format \
         exactly: \u{201c}[[rating]]\u{201d}. For example, \u{201c}Rating: [[3]]\u{201d}.\n"
    )
}

/// Reference-based self-evaluation prompt (paper Tab. 10), an MBR utility: does `prediction`
/// give the same answer as `reference`? (True = 1, False = 0).
pub fn reference_based_evaluation(question: &str, reference: &str, prediction: &str) -> String {
    format!(
        "Here is a question along with two responses: one is the reference response, and the other is \
         the predicted response. Please determine whether the two responses provide the same answer to the \
         question. Respond with \u{201c}True\u{201d} or \u{201c}False\u{201d} directly.\n\n[Question]\n{question}\n\n\
         [Reference Response]\n{reference}\n\n[Predicted Response]\n{prediction}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_message_layout() {
        assert_eq!(
            user_message("Passage 1:\nx", "Who?", Strategy::StepByStep),
            "\nPassage 1:\nx\n\nWho?\nLet's think step by step.\n"
        );
        // `default` has no suffix and the strip removes the dangling newline.
        assert_eq!(user_message("c", " Who? ", Strategy::Default), "\nc\n\nWho?\n");
    }

    #[test]
    fn passages_are_stripped_and_numbered() {
        assert_eq!(passages_context(&["a \n", "\n b"]), "Passage 1:\na\nPassage 2:\n\n b");
        assert_eq!(passages_context::<&str>(&[]), "");
    }

    #[test]
    fn strategies_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>().expect("parse"), s);
        }
        let e = "plan".parse::<Strategy>().unwrap_err().to_string();
        assert!(
            e.contains("unknown strategy \"plan\"") && e.contains("plan_and_solve"),
            "{e}"
        );
    }
}
