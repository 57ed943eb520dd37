//! Loading: the file over the defaults, then the environment, then validation.

use std::path::Path;

use super::{Config, ConfigError};

/// Environment variable prefix: `SRS_RELAY__SRS__MAX_AGE_DAYS=30`.
pub const ENV_PREFIX: &str = "SRS_RELAY";

impl Config {
    /// Loads `path` (if given; it must exist) over the defaults, then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = ::config::Config::builder();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError {
                    key: None,
                    message: format!("configuration file {} not found", path.display()),
                });
            }
            builder = builder.add_source(
                ::config::File::from(path)
                    .format(::config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            ::config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("srs.local_domains")
                .with_list_parse_key("server.listen")
                .with_list_parse_key("relay.trusted_networks")
                .with_list_parse_key("queue.retry_intervals")
                .with_list_parse_key("socketmap.listen")
                .with_list_parse_key("socketmap.exclude_domains")
                .with_list_parse_key("tcp_table.forward_listen")
                .with_list_parse_key("tcp_table.reverse_listen")
                .try_parsing(true),
        );
        let raw = builder.build().map_err(from_config_error)?;
        let mut cfg: Config = raw.try_deserialize().map_err(from_config_error)?;
        cfg.base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        cfg.file = path.map(Path::to_path_buf);
        cfg.validate()?;
        Ok(cfg)
    }
}

fn from_config_error(e: ::config::ConfigError) -> ConfigError {
    // The config crate puts the key in its message ("... for key `srs.max_age_days`").
    ConfigError {
        key: None,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bad_keys_are_named() {
        let cases = [
            ("[srs]\nformat = \"fancy\"\n", "srs.format"),
            ("[srs]\nseparator = \"/\"\n", "srs.separator"),
            ("[srs]\nhash_length = 2\n", "srs.hash_length"),
            ("[srs]\nmax_age_days = \"soon\"\n", "max_age_days"),
            ("[srs]\nmax_agedays = 3\n", "max_agedays"),
            ("[srs]\nbounce_senders = \"some\"\n", "srs.bounce_senders"),
            ("[trace]\nretention = \"soon\"\n", "trace.retention"),
            (
                "[trace]\nstore = \"mysql://u:pw@db/trace\"\n",
                "trace.store",
            ),
            (
                "[trace]\nstore = \"postgres://u:pw@db:port/t\"\n",
                "trace.store",
            ),
            ("[trace]\nstore = \"postgresql://u:pw@db\"\n", "trace.store"),
            ("[trace]\nkeep = 3\n", "keep"),
            (
                "[server]\nrefused_rcpts_window = \"soon\"\n",
                "server.refused_rcpts_window",
            ),
            (
                "[server]\nrefused_rcpts_window = \"0s\"\n",
                "server.refused_rcpts_window",
            ),
            ("[server]\nmax_refused_rcpts = -1\n", "max_refused_rcpts"),
        ];
        for (text, key) in cases {
            let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            f.write_all(text.as_bytes()).unwrap();
            let e = Config::load(Some(f.path())).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} gave {e:?}");
            assert!(!e.contains("pw@"), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn debug_hides_the_trace_store_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let store = "postgres://trace:pw-Hidden@db.example/trace";
        std::fs::write(&path, format!("[trace]\nstore = \"{store}\"\n")).unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.trace.store, store);
        let shown = format!("{cfg:?}");
        assert!(shown.contains("postgres://...") && !shown.contains("pw-Hidden"));
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
