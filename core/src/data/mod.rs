//! Data: JSON Lines I/O, the QA dataset readers, and long-context question synthesis.

pub mod evalfiles;
pub mod jsonl;
pub mod pairs;
pub mod records;
pub mod samples;
pub mod settings;
pub mod synth;

pub use records::{LongBenchRecord, MultiHopRecord, MusiqueRecord, Paragraph};
