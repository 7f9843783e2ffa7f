//! The web crate's error: a message for the page (the core's errors already name the file, line
//! or tensor). In the browser it becomes a JavaScript `Error` the worker posts to the page.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebError(String);

impl WebError {
    pub fn new(message: impl Into<String>) -> Self {
        WebError(message.into())
    }
}

impl fmt::Display for WebError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebError {}

impl From<sealong::Error> for WebError {
    fn from(e: sealong::Error) -> Self {
        WebError(e.to_string())
    }
}

#[cfg(target_family = "wasm")]
impl From<WebError> for wasm_bindgen::JsValue {
    fn from(e: WebError) -> Self {
        wasm_bindgen::JsError::new(&e.0).into()
    }
}
