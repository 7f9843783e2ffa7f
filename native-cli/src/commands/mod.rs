//! One module per `sealong` command.

pub mod bench;
pub mod decode;
pub mod generate;
pub mod models;
pub mod sample;
pub mod subem;
pub mod synth;
pub mod tokenize;
