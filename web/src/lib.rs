//! sealong-rs in the browser: MBR scoring and visualization over the shared core. This crate
//! compiles natively and to wasm32; the page, worker and wasm-bindgen exports come with the
//! browser issue. For now it exposes the core pieces the page will call, so the wasm32 build of
//! the core is checked in CI from the start.

/// SubEM of a prediction against gold answers (the metric the page marks answers with).
pub fn sub_em(prediction: &str, golds: &[String]) -> bool {
    sealong::eval::sub_em(prediction, golds)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sub_em_is_the_core_metric() {
        assert!(super::sub_em("The answer is Paris.", &["paris".into()]));
    }
}

// getrandom crates are linked only to select their browser backends.
#[cfg(target_family = "wasm")]
use getrandom_02 as _;
#[cfg(target_family = "wasm")]
use getrandom_03 as _;
#[cfg(target_family = "wasm")]
use getrandom_04 as _;
