//! Models: the decoder that generates and trains (and, later, the sentence encoder).

pub mod decoder;
