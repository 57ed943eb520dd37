//! srs-relay: an SMTP forwarding relay with the Sender Rewriting Scheme.
//!
//! The [`srs`] module is the codec, usable on its own: depend on this crate with
//! `default-features = false` to get it without the CLI, tokio, rustls or server code.

pub mod srs;

#[cfg(feature = "cli")]
pub mod config;
#[cfg(feature = "cli")]
pub mod secrets;

#[cfg(feature = "server")]
mod accept;
#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod alerts;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod bounce;
#[cfg(feature = "server")]
pub mod control;
#[cfg(feature = "server")]
pub mod delivery;
#[cfg(feature = "server")]
pub mod dsn;
#[cfg(feature = "server")]
pub mod explain;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod policy;
#[cfg(feature = "server")]
pub mod privileges;
#[cfg(feature = "server")]
pub mod relay;
#[cfg(feature = "server")]
pub mod reload;
#[cfg(feature = "server")]
pub mod sender_store;
#[cfg(feature = "server")]
pub mod smtp;
#[cfg(feature = "server")]
pub mod socketmap;
#[cfg(feature = "server")]
pub mod spool;
#[cfg(feature = "server")]
pub mod time;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod trace;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use srs::{Format, Options, Srs};
