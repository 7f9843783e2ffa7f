//! Multiple-choice accuracy as LongBench-v2 scores it (THUDM/LongBench `pred.py`,
//! `extract_answer`): every `*` is removed from the response, then the first match of
//! `The correct answer is \(([A-D])\)` gives the letter, else the first match of
//! `The correct answer is ([A-D])`, else there is none; the prediction is correct when the letter
//! equals the gold one. Both patterns are case-sensitive, and the second one also reads the first
//! letter of a word (`The correct answer is Apple` gives `A`), as the regex does.

const MARKER: &str = "The correct answer is ";

/// The letter the response chooses, or `None`.
pub fn extract(response: &str) -> Option<char> {
    let text: String = response.chars().filter(|&c| c != '*').collect();
    let letter = |c: Option<char>| c.filter(|c| ('A'..='D').contains(c));
    // `re.search` of the parenthesized form first, over the whole text.
    for (at, _) in text.match_indices(MARKER) {
        let mut rest = text[at + MARKER.len()..].chars();
        if rest.next() == Some('(')
            && let Some(c) = letter(rest.next())
            && rest.next() == Some(')')
        {
            return Some(c);
        }
    }
    text.match_indices(MARKER)
        .find_map(|(at, _)| letter(text[at + MARKER.len()..].chars().next()))
}

/// Whether the response's letter is `gold` (`"A"`..`"D"`).
pub fn correct(response: &str, gold: &str) -> bool {
    extract(response).is_some_and(|c| gold.trim().chars().eq(std::iter::once(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_follows_pred_py() {
        assert_eq!(extract("The correct answer is (B)"), Some('B'));
        assert_eq!(extract("Thinking... **The correct answer is (C)**."), Some('C'));
        assert_eq!(extract("The correct answer is D."), Some('D'));
        // The parenthesized form wins even when the bare form comes first.
        assert_eq!(
            extract("The correct answer is A, no: The correct answer is (B)"),
            Some('B')
        );
        // The first parenthesized match is taken.
        assert_eq!(
            extract("The correct answer is (A). The correct answer is (D)."),
            Some('A')
        );
        // As the regex: the first letter of a word.
        assert_eq!(extract("The correct answer is Apple"), Some('A'));
        assert_eq!(extract("The correct answer is (E)"), None);
        assert_eq!(extract("the correct answer is (A)"), None);
        assert_eq!(extract("The correct answer is  (A)"), None);
        assert_eq!(extract("I pick (A)"), None);
        assert_eq!(extract(""), None);
    }

    #[test]
    fn accuracy_compares_letters() {
        assert!(correct("The correct answer is (B)", "B"));
        assert!(!correct("The correct answer is (B)", "A"));
        assert!(!correct("no answer", "A"));
    }
}
