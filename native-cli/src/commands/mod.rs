//! One module per `sealong` command.

pub mod models;
pub mod subem;
pub mod synth;
pub mod tokenize;
