//! sealong core: everything but the edges. Models, tokenizers and chat templates, SEALONG's
//! prompts, dataset readers and question synthesis, MBR scoring, training and evaluation.
//! It takes paths or bytes and returns data or an [`Error`]; it never prints, reads the process
//! environment or talks to the network (the CLI and the web crate do).

pub mod data;
pub mod error;
pub mod eval;
pub mod files;
pub mod generate;
pub mod loading;
pub mod mbr;
pub mod mem;
pub mod models;
pub mod nn;
pub mod ops;
pub mod quant;
pub mod rng;
pub mod text;
pub mod train;

pub use error::{Error, Result};
