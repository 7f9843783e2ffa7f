//! Python `str` semantics the references rely on (`isspace`, `strip`, `split`, `isalnum`), so
//! prompts and SubEM match the Python code byte for byte, not only on ASCII.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Python's `str.isspace()` for one character: Unicode White_Space plus the ASCII
/// information separators U+001C..U+001F, which Python counts as whitespace and Rust does not.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Python's `s.split()` (no separator): runs of whitespace separate, empty pieces dropped.
pub fn split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|p| !p.is_empty())
}

/// Python's `c.isalnum()`: letters (Lu, Ll, Lt, Lm, Lo) and numbers (Nd, Nl, No). This is what
/// `\w` means in Python's `re` for str patterns (plus `_`).
pub fn is_alnum(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
            | GeneralCategory::DecimalNumber
            | GeneralCategory::LetterNumber
            | GeneralCategory::OtherNumber
    )
}

/// Python `re`'s `\w` for str patterns.
pub fn is_word(c: char) -> bool {
    c == '_' || is_alnum(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace() {
        assert_eq!(strip("\u{1f} a b\u{3000}\u{a0}"), "a b");
        assert_eq!(split_whitespace(" a\u{1c}b  c\t").collect::<Vec<_>>(), ["a", "b", "c"]);
        // Combining marks are not word characters in Python (they are in Rust's \w).
        assert!(!is_word('\u{301}'));
        assert!(is_word('é') && is_word('_') && is_word('٣'));
    }
}
