//! The final answer inside a reasoning answer, for MBR's answer-span mode: the five prompt
//! strategies ask for reasoning, so samples run to hundreds of tokens while the part MBR should
//! agree on is a short span at the end ("... Therefore, the answer is Paris.").

/// The markers that introduce a final answer, matched case-insensitively; the last occurrence
/// of any of them wins.
pub const MARKERS: [&str; 4] = ["the answer is", "answer is", "answer:", "therefore,"];

/// The span of `text` MBR compares in answer-span mode: the text after the last final-answer
/// marker ([`MARKERS`]) up to the end of that line, trimmed of spaces, colons and a trailing
/// period; with no marker (or nothing after it), the last non-empty line trimmed the same way;
/// with no text, `text` itself.
pub fn answer_span(text: &str) -> &str {
    let lower = text.to_ascii_lowercase();
    // ASCII lowercasing keeps byte offsets, so positions in `lower` are positions in `text`.
    let after = MARKERS
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| i + m.len()))
        .max()
        .map(|start| first_line(&text[start..]))
        .filter(|s| !s.is_empty());
    after
        .or_else(|| text.lines().rev().map(tidy).find(|l| !l.is_empty()))
        .unwrap_or(text)
}

fn first_line(s: &str) -> &str {
    tidy(s.lines().find(|l| !l.trim().is_empty()).unwrap_or(""))
}

fn tidy(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == ':' || c == '*')
        .trim_end_matches('.')
        .trim()
}

#[cfg(test)]
mod tests {
    use super::answer_span;

    #[test]
    fn the_span_after_the_last_marker_or_the_last_line() {
        assert_eq!(
            answer_span("Plan: find X.\nThe capital is Paris.\nTherefore, the answer is Paris."),
            "Paris"
        );
        assert_eq!(answer_span("Step 1 ...\nAnswer: **1987**"), "1987");
        // The last marker wins, and only its line counts.
        assert_eq!(
            answer_span("The answer is A? No.\nSo the answer is: Bob Dylan.\nHe wrote many songs."),
            "Bob Dylan"
        );
        // No marker: the last non-empty line.
        assert_eq!(answer_span("Reasoning...\nMarie Curie.\n\n"), "Marie Curie");
        // A marker with nothing after it falls back to the last line.
        assert_eq!(answer_span("It is London\nThe answer is"), "The answer is");
        assert_eq!(answer_span(""), "");
        // Non-ASCII text keeps its offsets.
        assert_eq!(answer_span("Ünïcode reasoning. The answer is Zürich."), "Zürich");
    }
}
