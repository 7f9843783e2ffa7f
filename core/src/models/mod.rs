//! Models: the decoder that generates and trains, the sentence encoder that scores, and finding
//! a model directory's files ([`files`]).

pub mod decoder;
pub mod encoder;
pub(crate) mod files;
pub mod inspect;
