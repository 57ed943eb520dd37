//! The codec's settings: which form to write and how.

use std::fmt;
use std::str::FromStr;

/// Which form [`Srs::forward`](super::Srs::forward) writes. Reverse reads both, whatever
/// this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Microsoft,
    Classic,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "microsoft" => Ok(Format::Microsoft),
            "classic" => Ok(Format::Classic),
            _ => Err(format!(
                "unknown SRS format {s:?} (expected microsoft or classic)"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Microsoft => "microsoft",
            Format::Classic => "classic",
        })
    }
}

/// The alphabet of the classic hash on output (both are accepted on reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashEncoding {
    /// Standard base64, as Mail::SRS and postsrsd before 2.2.6 write it.
    #[default]
    Base64,
    /// base64url (`-_` for `+/`), as postsrsd ≥ 2.2.6 writes it.
    Base64Url,
}

impl FromStr for HashEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "base64" => Ok(HashEncoding::Base64),
            "base64url" => Ok(HashEncoding::Base64Url),
            _ => Err(format!(
                "unknown hash encoding {s:?} (expected base64 or base64url)"
            )),
        }
    }
}

/// Codec settings. `Options::default()` is the documented default of every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Form written by forward (default Microsoft).
    pub format: Format,
    /// Oldest timestamp accepted on reverse, in days (default 21).
    pub max_age_days: u32,
    /// Classic hash length in base64 characters (default 4, as Mail::SRS and postsrsd).
    pub hash_length: usize,
    /// Microsoft-form hash length in base32 characters (default 8 = 40 bits, minimum 6).
    pub microsoft_hash_length: usize,
    /// Separator after `SRS0`/`SRS1` in the classic form: `=`, `+` or `-` (default `=`).
    pub separator: char,
    /// Classic hash alphabet on output (default base64).
    pub hash_encoding: HashEncoding,
    /// Domains whose senders are never rewritten; `.example.org` also matches subdomains.
    pub local_domains: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format: Format::Microsoft,
            max_age_days: 21,
            hash_length: 4,
            microsoft_hash_length: 8,
            separator: '=',
            hash_encoding: HashEncoding::Base64,
            local_domains: Vec::new(),
        }
    }
}
