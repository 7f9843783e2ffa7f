//! Models: the decoder that generates and trains, and the sentence encoder that scores.

pub mod decoder;
pub mod encoder;
pub mod inspect;
