//! SubEM and its normalization against every golden case (Python's SEALONG code). Exact.

use sealong::eval::{normalize, sub_em};
use sealong_tests::{golden_json, s};

#[test]
fn every_golden_case_matches() {
    let g = golden_json("subem.json");
    let cases = g["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    for c in cases {
        let pred = s(c, "prediction");
        let golds: Vec<String> = serde_json::from_value(c["golds"].clone()).expect("golds");
        assert_eq!(normalize(pred), s(c, "normalized_prediction"), "normalize({pred:?})");
        for (gold, norm) in golds.iter().zip(c["normalized_golds"].as_array().expect("ng")) {
            assert_eq!(normalize(gold), norm.as_str().expect("str"), "normalize({gold:?})");
        }
        for (gold, per) in golds.iter().zip(c["per_gold"].as_array().expect("per_gold")) {
            assert_eq!(
                sub_em(pred, &[gold]),
                per.as_u64() == Some(1),
                "sub_em({pred:?}, {gold:?})"
            );
        }
        let expected = c["subem"].as_u64() == Some(1);
        assert_eq!(
            sub_em(pred, &golds),
            expected,
            "sub_em({pred:?}, {golds:?}) note: {}",
            c["note"]
        );
    }
}

#[test]
fn punctuation_set_is_pythons() {
    let g = golden_json("subem.json");
    let punct = s(&g, "string_punctuation");
    // Every ASCII punctuation character disappears; nothing else does.
    for c in punct.chars() {
        assert_eq!(normalize(&format!("x{c}y")), "xy", "{c:?} should be removed");
    }
    assert_eq!(normalize("x\u{2019}y\u{2014}z"), "x\u{2019}y\u{2014}z");
}
