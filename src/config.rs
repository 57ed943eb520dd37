//! Typed configuration: one TOML file (`config/srs-relay.toml` documents every key) with
//! environment overrides `SRS_RELAY__SECTION__KEY`. Defaults live here, in one place.
//! Every error names the key it is about.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::srs::{Format, HashEncoding, Options};

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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub srs: SrsConfig,
    /// Directory of the configuration file; relative paths in it are taken from here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrsConfig {
    /// `microsoft` or `classic`: the form written on forward (both are read on reverse).
    pub format: String,
    /// One secret per line; the first signs, all verify; blank lines and `#` comments skipped.
    pub secrets_file: PathBuf,
    pub max_age_days: u32,
    /// Classic hash length, base64 characters.
    pub hash_length: usize,
    /// Microsoft-form hash length, base32 characters.
    pub microsoft_hash_length: usize,
    /// Classic separator after SRS0/SRS1: `=`, `+` or `-`.
    pub separator: String,
    /// Classic hash alphabet on output: `base64` or `base64url`.
    pub hash_encoding: String,
    /// Domains whose senders are never rewritten (`.example.org` matches subdomains).
    pub local_domains: Vec<String>,
    /// Domain for relayed mail (`bounces+SRS=…@default_domain`) and the CLI's default.
    pub default_domain: Option<String>,
}

impl Default for SrsConfig {
    fn default() -> Self {
        let o = Options::default();
        SrsConfig {
            format: o.format.to_string(),
            secrets_file: PathBuf::from("srs-secrets"),
            max_age_days: o.max_age_days,
            hash_length: o.hash_length,
            microsoft_hash_length: o.microsoft_hash_length,
            separator: o.separator.to_string(),
            hash_encoding: "base64".into(),
            local_domains: Vec::new(),
            default_domain: None,
        }
    }
}

/// Environment variable prefix: `SRS_RELAY__SRS__MAX_AGE_DAYS=30`.
pub const ENV_PREFIX: &str = "SRS_RELAY";

impl Config {
    /// Loads `path` (if given; it must exist) over the defaults, then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError {
                    key: None,
                    message: format!("configuration file {} not found", path.display()),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("srs.local_domains")
                .try_parsing(true),
        );
        let raw = builder.build().map_err(from_config_error)?;
        let mut cfg: Config = raw.try_deserialize().map_err(from_config_error)?;
        cfg.base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        cfg.srs.options()?;
        Ok(cfg)
    }

    /// A path from the file, taken relative to the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.resolve(&self.srs.secrets_file)
    }
}

impl SrsConfig {
    /// The codec options these keys describe.
    pub fn options(&self) -> Result<Options, ConfigError> {
        let format: Format = self
            .format
            .parse()
            .map_err(|e| ConfigError::key("srs.format", e))?;
        let hash_encoding: HashEncoding = self
            .hash_encoding
            .parse()
            .map_err(|e| ConfigError::key("srs.hash_encoding", e))?;
        let mut chars = self.separator.chars();
        let separator = match (chars.next(), chars.next()) {
            (Some(c @ ('=' | '+' | '-')), None) => c,
            _ => {
                return Err(ConfigError::key(
                    "srs.separator",
                    format!("must be one of = + -, got {:?}", self.separator),
                ));
            }
        };
        let options = Options {
            format,
            max_age_days: self.max_age_days,
            hash_length: self.hash_length,
            microsoft_hash_length: self.microsoft_hash_length,
            separator,
            hash_encoding,
            local_domains: self
                .local_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
        };
        // Let the codec check the ranges, and name the key it refused.
        match crate::srs::Srs::new(&["probe"], options.clone()) {
            Ok(_) => Ok(options),
            Err(e) => {
                use crate::srs::OptionsError as E;
                let key = match e {
                    E::HashLength(_) => "srs.hash_length",
                    E::MicrosoftHashLength(_) => "srs.microsoft_hash_length",
                    E::MaxAge(_) => "srs.max_age_days",
                    E::Separator(_) => "srs.separator",
                    E::NoSecret | E::EmptySecret(_) => "srs.secrets_file",
                };
                Err(ConfigError::key(key, e))
            }
        }
    }
}

fn from_config_error(e: config::ConfigError) -> ConfigError {
    // The config crate puts the key in its message ("... for key `srs.max_age_days`").
    ConfigError {
        key: None,
        message: e.to_string(),
    }
}

/// Reads a secrets file: one secret per line, the first signs; blank lines and lines
/// starting with `#` are skipped; a trailing CR/LF is not part of a secret (the format
/// of postsrsd's secrets file, so the same file serves both).
pub fn read_secrets(path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let data = std::fs::read(path).map_err(|e| {
        ConfigError::key(
            "srs.secrets_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let secrets: Vec<Vec<u8>> = data
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace) && !line.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect();
    if secrets.is_empty() {
        return Err(ConfigError::key(
            "srs.secrets_file",
            format!("{} holds no secret", path.display()),
        ));
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn secrets_file_format() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"# rotated 2026-11\n\nnew-secret\r\nold secret\n  \n")
            .unwrap();
        let s = read_secrets(f.path()).unwrap();
        assert_eq!(s, vec![b"new-secret".to_vec(), b"old secret".to_vec()]);
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(
            read_secrets(empty.path())
                .unwrap_err()
                .to_string()
                .starts_with("srs.secrets_file:")
        );
    }

    #[test]
    fn bad_keys_are_named() {
        let cases = [
            ("[srs]\nformat = \"fancy\"\n", "srs.format"),
            ("[srs]\nseparator = \"/\"\n", "srs.separator"),
            ("[srs]\nhash_length = 2\n", "srs.hash_length"),
            ("[srs]\nmax_age_days = \"soon\"\n", "max_age_days"),
            ("[srs]\nmax_agedays = 3\n", "max_agedays"),
        ];
        for (text, key) in cases {
            let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            f.write_all(text.as_bytes()).unwrap();
            let e = Config::load(Some(f.path())).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[srs]\nsecrets_file = \"keys/s\"\n").unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.secrets_path(), dir.path().join("keys/s"));
    }
}
