//! GSM8K's numeric final-answer metric. What is compared, exactly:
//!
//! - the **prediction's number** is the last number in the model's whole output, where a number
//!   is a run of ASCII digits that may contain commas between digits (`1,234`), optionally
//!   followed by `.` and more digits (`18.00`), and optionally preceded by `-` when that `-` does
//!   not follow a letter or digit (so `-7` is negative, `10-3` ends with the number `3`). A `.` not
//!   followed by a digit ends the number (`$18.` reads 18); `$`, `%` and units around it are
//!   ignored. The commas are removed and the text is parsed as an f64;
//! - the **gold number** is the solution's text after its last `####`, commas removed
//!   (`data::evalfiles::gsm8k_final_answer`), parsed as an f64;
//! - the prediction is correct when both parse and are equal as f64 (`18.00` equals `18`). An
//!   output without a number is wrong.

/// The last number of `text` (commas removed), as written, or `None`.
pub fn last_number(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut last: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        // Digits, and commas between digits (`1,234`).
        while i < b.len()
            && (b[i].is_ascii_digit()
                || (b[i] == b',' && i + 1 < b.len() && b[i + 1].is_ascii_digit() && b[i - 1].is_ascii_digit()))
        {
            i += 1;
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        // A sign: `-` right before, not after a word character (that is subtraction or a range).
        let signed = start >= 1
            && b[start - 1] == b'-'
            && (start == 1 || !(b[start - 2].is_ascii_alphanumeric() || b[start - 2] == b'_'));
        last = Some((if signed { start - 1 } else { start }, i));
    }
    last.map(|(s, e)| text[s..e].chars().filter(|&c| c != ',').collect())
}

/// Whether the output's last number equals `gold` numerically (see the module docs).
pub fn correct(output: &str, gold: &str) -> bool {
    let gold: Option<f64> = gold
        .chars()
        .filter(|&c| c != ',')
        .collect::<String>()
        .trim()
        .parse()
        .ok();
    let pred: Option<f64> = last_number(output).and_then(|n| n.parse().ok());
    matches!((pred, gold), (Some(p), Some(g)) if p == g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_number_is_read() {
        assert_eq!(last_number("She makes 9 * 2 = $18 every day.").as_deref(), Some("18"));
        assert_eq!(last_number("The answer is 1,234.").as_deref(), Some("1234"));
        assert_eq!(last_number("The answer is $18.").as_deref(), Some("18"));
        assert_eq!(last_number("The answer is 18.00").as_deref(), Some("18.00"));
        assert_eq!(last_number("It drops to -7 degrees").as_deref(), Some("-7"));
        assert_eq!(last_number("10-3").as_deref(), Some("3"));
        assert_eq!(last_number("x-3").as_deref(), Some("3"));
        assert_eq!(last_number("(-3)").as_deref(), Some("-3"));
        assert_eq!(last_number("0.5 of 40% is 20%").as_deref(), Some("20"));
        assert_eq!(last_number("1,2,3").as_deref(), Some("123"));
        assert_eq!(last_number("a list: 5, 6").as_deref(), Some("6"));
        assert_eq!(last_number("no number here"), None);
        assert_eq!(last_number(""), None);
    }

    #[test]
    fn numbers_compare_numerically() {
        assert!(correct("so the total is 18.00 dollars", "18"));
        assert!(correct("The answer is 1,234.", "1234"));
        assert!(correct("The answer is $5.", "5"));
        assert!(correct("The answer is -3", "-3"));
        assert!(correct("0.50", "0.5"));
        assert!(!correct("The answer is 3", "-3"));
        assert!(!correct("18 apples, 2 left", "18"));
        assert!(!correct("I do not know", "18"));
        assert!(!correct("42", "not a number"));
    }
}
