//! Minimum Bayes Risk scoring: utilities between the N sampled answers (embedding cosine,
//! ROUGE, self-evaluation) and the selection of chosen / rejected from the utility matrix.

pub mod embedding;
pub mod judge;
pub mod rouge;
pub mod select;

pub use select::{Selection, select, select_from_matrix, select_random};
