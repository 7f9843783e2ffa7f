//! sealong-rs in the browser: MBR scoring and visualization over the shared core. The page
//! (`web/www`) runs this crate in a Web Worker: it parses a samples or scored JSONL file, embeds
//! each question's answers with the core encoder (WebGPU through burn-wgpu, or the CPU engine),
//! and scores them with the same core MBR code as `sealong score`.
//!
//! The crate compiles natively too; `records` and `scoring` hold the logic and are tested there,
//! `bindings` (wasm32 only) is the JavaScript surface.

pub mod error;
pub mod records;
pub mod scoring;

#[cfg(target_family = "wasm")]
pub mod bindings;

pub use error::WebError;
pub use records::{ParsedFile, Record, parse};
pub use scoring::{Backend, ModelFiles, Scored, Scorer};

/// SubEM of a prediction against gold answers (the metric the page marks answers with).
pub fn sub_em(prediction: &str, golds: &[String]) -> bool {
    sealong::eval::sub_em(prediction, golds)
}

// getrandom crates are linked only to select their browser backends.
#[cfg(target_family = "wasm")]
use getrandom_02 as _;
#[cfg(target_family = "wasm")]
use getrandom_03 as _;
#[cfg(target_family = "wasm")]
use getrandom_04 as _;

#[cfg(test)]
mod tests {
    #[test]
    fn sub_em_is_the_core_metric() {
        assert!(super::sub_em("The answer is Paris.", &["paris".into()]));
    }
}
