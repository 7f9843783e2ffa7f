//! Minimum Bayes Risk scoring: utilities between the N sampled answers (embedding cosine,
//! ROUGE, chrF, self-evaluation), the selection of chosen / rejected from the utility matrix,
//! and the method that ties them together (`method`: names, random streams, select step), and
//! what MBR reads of an answer longer than the embedder's window (`long_text`).

pub mod chrf;
pub mod embedding;
pub mod judge;
pub mod long_text;
pub mod method;
pub mod rouge;
pub mod select;

pub use long_text::LongText;
pub use method::{Method, Ranked};
pub use select::{Selection, select, select_from_matrix, select_random};
