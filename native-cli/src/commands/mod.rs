//! One module per `sealong` command, each with its Args; `bench_common` is what the bench
//! commands share.

pub mod bench;
pub mod bench_common;
pub mod bench_scoring;
pub mod bench_train;
pub mod embed;
pub mod eval;
pub mod generate;
pub mod models;
pub mod report;
pub mod run;
pub mod sample;
pub mod score;
pub mod study;
pub mod subem;
pub mod synth;
pub mod tokenize;
pub mod train;
pub mod view;
