//! Typed errors of the codec. Each failure mode is its own variant so the relay can map
//! it to the right SMTP reply (bad hash and expiry → 550 5.7.1, malformed → 550 5.1.1,
//! too long → fall back to the stored `bounces+SRS=` form).

use thiserror::Error;

/// Why [`Srs::new`](super::Srs::new) refused its secrets or options.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptionsError {
    #[error("no secret given: at least one is needed (the first one signs)")]
    NoSecret,
    #[error("secret #{0} is empty")]
    EmptySecret(usize),
    #[error("hash_length must be between 4 and 27 base64 characters, got {0}")]
    HashLength(usize),
    #[error("microsoft_hash_length must be between 6 (30 bits) and 52 base32 characters, got {0}")]
    MicrosoftHashLength(usize),
    #[error("max_age_days must be between 1 and 1000, got {0}")]
    MaxAge(u32),
    #[error("separator must be one of = + -, got {0:?}")]
    Separator(char),
}

/// Why an address could not be rewritten on the way out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ForwardError {
    #[error("invalid sender address: {0}")]
    InvalidSender(&'static str),
    #[error("invalid forwarding address: {0}")]
    InvalidAlias(&'static str),
    /// The rewritten local part would exceed RFC 5321's 64 octets, which breaks the bounce
    /// path at many receivers. The relay answers this with the stored `bounces+SRS=` form.
    #[error("rewritten local part would be {length} octets, over the 64-octet limit")]
    TooLong { length: usize },
}

/// Why an address was not reversed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReverseError {
    #[error("not an SRS address")]
    NotSrs,
    #[error("malformed SRS address: {0}")]
    Malformed(&'static str),
    #[error("bad SRS hash: not signed by any configured secret")]
    BadHash,
    /// Too old, or from the future (which the classic 1024-day timestamp wraps into "old").
    #[error("SRS address expired: {age_days} days old, {max_age_days} allowed")]
    Expired { age_days: u32, max_age_days: u32 },
}
