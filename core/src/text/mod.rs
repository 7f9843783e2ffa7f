//! Text: tokenizers, chat templates, SEALONG prompts, and the Python string semantics they need.

pub mod answer;
pub mod chat_template;
pub mod prompts;
pub mod pystr;
pub mod tokenizer;

pub use chat_template::{ChatTemplate, Message};
pub use prompts::Strategy;
pub use tokenizer::Tokenizer;
