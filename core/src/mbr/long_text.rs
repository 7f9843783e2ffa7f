//! What MBR reads of an answer longer than the sentence embedder's window (issue 16, item 3).
//!
//! The five prompt strategies ask for reasoning, so a sample runs to hundreds of tokens, while
//! the default embedder (all-MiniLM-L6-v2) reads 256 tokens, specials included. Three readings:
//! - [`LongText::Truncate`]: what sentence-transformers does, the first `max_seq_length` tokens.
//!   The samples cut are counted and reported, never cut silently.
//! - [`LongText::Windowed`]: the whole answer, as the renormalized mean of its windows' unit
//!   vectors ([`SentenceEmbedder::embed_windowed`]); an answer within the window is embedded
//!   exactly as under truncation.
//! - [`LongText::AnswerSpan`]: only the final answer after the strategy's last answer marker
//!   ([`crate::text::answer::answer_span`]), for every utility (ROUGE-L and chrF compare the
//!   spans too). Spans are short, so nothing is cut.
//!
//! The text utilities (ROUGE-L, chrF) have no window: under `truncate` and `windowed` they read
//! the whole answer, and only `answer-span` changes what they compare.

use std::borrow::Cow;

use crate::models::encoder::{EmbedPlan, SentenceEmbedder};
use crate::text::answer::answer_span;
use crate::{Error, Result};

/// How MBR reads an answer longer than the embedder's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LongText {
    /// The embedder's first `max_seq_length` tokens (sentence-transformers' behaviour); the
    /// answers cut are counted.
    Truncate,
    /// The mean of the answer's windows' unit vectors, renormalized: every token is read once.
    #[default]
    Windowed,
    /// Only the final answer after the last answer marker, for every utility.
    AnswerSpan,
}

impl LongText {
    /// Every reading, in the order the CLI lists them.
    pub const ALL: [LongText; 3] = [LongText::Truncate, LongText::Windowed, LongText::AnswerSpan];

    /// The name on the command line, in run configs and in the records' `long_text` field.
    pub fn name(self) -> &'static str {
        match self {
            LongText::Truncate => "truncate",
            LongText::Windowed => "windowed",
            LongText::AnswerSpan => "answer-span",
        }
    }

    /// One line of help (the CLI's possible-value help; no final period).
    pub fn help(self) -> &'static str {
        match self {
            LongText::Truncate => {
                "The embedder reads each answer's first max_seq_length tokens (sentence-transformers' behaviour); answers cut are counted"
            }
            LongText::Windowed => {
                "The whole answer: the renormalized mean of its windows' unit vectors (an answer within the window is embedded as is)"
            }
            LongText::AnswerSpan => {
                "Only the final answer after the last answer marker (\"the answer is\", \"Answer:\", ...), for every utility"
            }
        }
    }

    /// The reading named `name`; the error lists the names.
    pub fn from_name(name: &str) -> Result<LongText> {
        LongText::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            let names: Vec<&str> = LongText::ALL.iter().map(|m| m.name()).collect();
            Error::Invalid(format!(
                "unknown long-text reading {name:?}; expected one of {}",
                names.join(", ")
            ))
        })
    }

    /// The texts a text utility (ROUGE-L, chrF) compares: the answer spans under
    /// [`LongText::AnswerSpan`], else the answers themselves (text utilities have no window).
    pub fn texts<'a, S: AsRef<str>>(self, answers: &'a [S]) -> Vec<Cow<'a, str>> {
        answers
            .iter()
            .map(|a| match self {
                LongText::AnswerSpan => Cow::Borrowed(answer_span(a.as_ref())),
                LongText::Truncate | LongText::Windowed => Cow::Borrowed(a.as_ref()),
            })
            .collect()
    }
}

impl std::fmt::Display for LongText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LongText {
    type Err = Error;

    fn from_str(s: &str) -> Result<LongText> {
        LongText::from_name(s)
    }
}

/// One question's answers embedded for MBR under a reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// One vector per answer, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Answers longer than the embedder's window (counted under every reading; under
    /// `answer-span`, the spans that were).
    pub over_window: usize,
    /// Of those, the answers the embedder saw only the beginning of (`truncate`; 0 otherwise).
    pub cut: usize,
}

/// The answers' vectors under `reading`: truncated, windowed, or the answer spans embedded (a
/// span over the window is windowed, so no reading but `truncate` cuts).
pub fn embed<S: AsRef<str>>(embedder: &SentenceEmbedder, answers: &[S], reading: LongText) -> Result<Embedded> {
    let plan = plan(embedder, answers, reading)?;
    Ok(Embedded {
        vectors: embedder.embed_planned(&plan)?,
        over_window: plan.over_window,
        cut: plan.cut,
    })
}

/// [`embed`] for callers that must not block on a device read (the browser page on WebGPU).
/// Same vectors and counts.
pub async fn embed_async<S: AsRef<str>>(
    embedder: &SentenceEmbedder,
    answers: &[S],
    reading: LongText,
) -> Result<Embedded> {
    let plan = plan(embedder, answers, reading)?;
    Ok(Embedded {
        vectors: embedder.embed_planned_async(&plan).await?,
        over_window: plan.over_window,
        cut: plan.cut,
    })
}

fn plan<S: AsRef<str>>(embedder: &SentenceEmbedder, answers: &[S], reading: LongText) -> Result<EmbedPlan> {
    let texts = match reading {
        LongText::AnswerSpan => reading.texts(answers),
        LongText::Truncate | LongText::Windowed => answers.iter().map(|a| Cow::Borrowed(a.as_ref())).collect(),
    };
    let refs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
    embedder.plan(&refs, reading != LongText::Truncate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_readings() {
        for m in LongText::ALL {
            assert_eq!(m.name().parse::<LongText>().expect("name"), m);
            assert_eq!(m.to_string(), m.name());
            assert!(!m.help().ends_with('.'), "{m}: clap's help has no final period");
        }
        let e = "middle".parse::<LongText>().expect_err("unknown");
        assert!(
            e.to_string().contains("\"middle\"") && e.to_string().contains("answer-span"),
            "{e}"
        );
    }

    #[test]
    fn text_utilities_read_whole_answers_or_their_spans() {
        let a = ["Plan: look.\nTherefore, the answer is Paris.", "Answer: **Rome**"];
        for m in [LongText::Truncate, LongText::Windowed] {
            assert_eq!(m.texts(&a), vec![a[0], a[1]]);
        }
        assert_eq!(LongText::AnswerSpan.texts(&a), vec!["Paris", "Rome"]);
    }
}
