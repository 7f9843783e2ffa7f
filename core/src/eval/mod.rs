//! Evaluation: the SubEM metric and the paper's tables (greedy, MBR@N, random@N, oracle@N).

pub mod bootstrap;
pub mod report;
pub mod subem;
pub mod tables;

pub use subem::{normalize, sub_em};
