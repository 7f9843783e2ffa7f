//! SubEM, the paper's metric: does the normalized gold answer occur as a character substring of
//! the normalized whole output (`eval_longbench_qa.py::substring_exact_match_score`)?
//!
//! `normalize` follows the Python exactly: `lower()`; delete every ASCII punctuation character
//! (`string.punctuation`); `re.sub(r"\b(a|an|the)\b", " ")` with Python's Unicode `\b`;
//! `" ".join(s.split())` with Python's notion of whitespace.

use crate::text::pystr;

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// The SQuAD/DrQA answer normalization used by SEALONG.
pub fn normalize(s: &str) -> String {
    let lowered = s.to_lowercase();
    let no_punct: String = lowered.chars().filter(|c| !PUNCTUATION.contains(*c)).collect();
    let no_articles = remove_articles(&no_punct);
    pystr::split_whitespace(&no_articles).collect::<Vec<_>>().join(" ")
}

/// `re.sub(r"\b(a|an|the)\b", " ", s)`: each whole word a/an/the becomes one space. Word
/// boundaries use Python's `\w` (letters, numbers, underscore; not combining marks).
fn remove_articles(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let at_boundary = i == 0 || !pystr::is_word(chars[i - 1]);
        if at_boundary && pystr::is_word(chars[i]) {
            // The alternation tries "a" first, then "an", then "the"; "a" fails the trailing \b
            // before "an" is tried, so the first alternative that ends at a boundary wins.
            let matched = ["a", "an", "the"].into_iter().find_map(|w| {
                let n = w.chars().count();
                let fits = i + n <= chars.len() && chars[i..i + n].iter().copied().eq(w.chars());
                let ends = fits && (i + n == chars.len() || !pystr::is_word(chars[i + n]));
                ends.then_some(n)
            });
            if let Some(n) = matched {
                out.push(' ');
                i += n;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// SubEM of one prediction against one gold answer.
pub fn sub_em_one(prediction: &str, gold: &str) -> bool {
    normalize(prediction).contains(&normalize(gold))
}

/// SubEM against a list of golds: the maximum over them (false for an empty list).
pub fn sub_em<S: AsRef<str>>(prediction: &str, golds: &[S]) -> bool {
    let pred = normalize(prediction);
    golds.iter().any(|g| pred.contains(&normalize(g.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_cases() {
        assert_eq!(normalize("The Eiffel Tower!"), "eiffel tower");
        assert_eq!(normalize("an apple a day"), "apple day");
        assert_eq!(normalize("theatre anatomy"), "theatre anatomy");
        assert_eq!(normalize("“Quoted” — dash"), "“quoted” — dash");
        // `_` is ASCII punctuation (removed first); digits are word characters.
        assert_eq!(normalize("a_the"), "athe");
        assert_eq!(normalize("a1 the"), "a1");
    }

    #[test]
    fn character_substring_semantics() {
        assert!(sub_em("I do not know", &["no"]));
        assert!(sub_em("in 1990", &["1"]));
        assert!(!sub_em("anything", &[] as &[&str]));
        // An empty gold normalizes to "" and matches everything, as in Python.
        assert!(sub_em("x", &[""]));
    }
}
