//! The configuration error: what is wrong, and with which key.

use std::fmt;

/// A configuration error, naming the offending key where there is one.
#[derive(Debug)]
pub struct ConfigError {
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn key(key: &str, message: impl fmt::Display) -> Self {
        ConfigError {
            key: Some(key.to_owned()),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
