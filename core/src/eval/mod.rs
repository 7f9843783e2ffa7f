//! Evaluation: the SubEM metric (and, later, greedy/MBR@N/oracle@N tables and reports).

pub mod subem;

pub use subem::{normalize, sub_em};
