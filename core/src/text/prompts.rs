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

/// The multiple-choice message (LongBench-v2's zero-shot layout, our wording): the document
/// between `<text>` tags, the question, the four options as `(A) ..` lines, and the answer format
/// `The correct answer is (X)`, which `eval::choice::extract` reads back as LongBench-v2's
/// `pred.py` does. Each part is stripped, as `pred.py` strips them. Without `choices` (L-Eval,
/// whose questions list their options) the options line is left out.
pub fn multiple_choice_message<S: AsRef<str>>(context: &str, question: &str, choices: &[S]) -> String {
    let mut out = format!(
        "Read the text below and answer the question that follows it.\n\n<text>\n{}\n</text>\n\n\
         Question: {}\n",
        pystr::strip(context),
        pystr::strip(question)
    );
    // L-Eval's multiple-choice instructions carry their options in the question.
    if !choices.is_empty() {
        out.push_str("Choices:\n");
    }
    for (letter, c) in ['A', 'B', 'C', 'D'].iter().zip(choices) {
        out.push_str(&format!("({letter}) {}\n", pystr::strip(c.as_ref())));
    }
    out.push_str("\nEnd your response with: \"The correct answer is (X)\", where X is the letter of your choice.");
    out
}

/// The grade-school math message (GSM8K): solve step by step and end with the final number, which
/// `eval::numeric` reads back as the last number of the output.
pub fn math_message(question: &str) -> String {
    format!(
        "Solve the following math problem step by step. End your response with the final answer as a \
         single number on its own line, in the form \"The answer is N\".\n\nProblem: {}",
        pystr::strip(question)
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
