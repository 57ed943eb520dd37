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
    pub server: ServerConfig,
    pub spool: SpoolConfig,
    pub relay: RelayConfig,
    pub queue: QueueConfig,
    pub tls: TlsConfig,
    pub socketmap: SocketmapConfig,
    pub tcp_table: TcpTableConfig,
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
    /// Where the stored form keeps original senders: a database file (relative to this
    /// file's directory), or `redis://host:port/db` shared by several relays.
    pub store: String,
    /// Relayed mail (trusted clients) gets the stored form instead of the stateless one.
    pub stored_for_relayed: bool,
    /// Who may write to our SRS addresses: `any` sender, or only the `null` sender `<>`.
    pub bounce_senders: String,
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
            store: "srs-senders.redb".into(),
            stored_for_relayed: false,
            bounce_senders: "any".into(),
        }
    }
}

/// The SMTP listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `host:port` entries to listen on.
    pub listen: Vec<String>,
    /// Name in the greeting, EHLO reply and Received headers.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised in SIZE).
    pub max_message_size: usize,
    /// Recipients per message (RFC 5321 asks for at least 100).
    pub max_recipients: usize,
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1: 512; 1000 is usual).
    pub max_line_length: usize,
    /// Idle time allowed waiting for a command (RFC 5321 §4.5.3.2: 5 min).
    pub command_timeout: String,
    /// Idle time allowed between DATA blocks (RFC 5321 §4.5.3.2: 3 min).
    pub data_timeout: String,
    /// Concurrent SMTP connections in all.
    pub max_connections: usize,
    /// Concurrent SMTP connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Failed commands allowed in one session before 421 and close.
    pub max_errors: usize,
    /// Time sessions get to finish on SIGTERM before they are cut.
    pub shutdown_grace: String,
    /// Recipients refused (5xx at RCPT) per client address and window before the address
    /// is refused with 421 for a window; 0 turns this off.
    pub max_refused_rcpts: usize,
    /// The window of `max_refused_rcpts`, and the penalty.
    pub refused_rcpts_window: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["127.0.0.1:2525".into()],
            hostname: "localhost".into(),
            max_message_size: 36_700_160,
            max_recipients: 1000,
            max_line_length: 1000,
            command_timeout: "5m".into(),
            data_timeout: "3m".into(),
            max_connections: 10_000,
            max_connections_per_ip: 50,
            max_errors: 10,
            shutdown_grace: "30s".into(),
            max_refused_rcpts: 20,
            refused_rcpts_window: "10m".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory holding queued messages (created if missing).
    pub dir: PathBuf,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("spool"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Alias map: `john@forward.example: john@home.example, other@else.example`.
    pub aliases_file: Option<PathBuf>,
    /// Clients (CIDRs) that may relay to any recipient: on-premises servers.
    pub trusted_networks: Vec<String>,
    /// Deliver everything to this `host:port` instead of looking up MX records.
    pub smarthost: Option<String>,
    /// Per-domain next hops, before the smarthost and MX: `"home.example" = "10.0.0.5:25"`
    /// (a leading dot matches subdomains), like Postfix's transport map.
    pub routes: std::collections::BTreeMap<String, String>,
    /// More Received headers than this is a mail loop (refused with 554 5.4.6).
    pub max_received_headers: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            aliases_file: None,
            trusted_networks: Vec::new(),
            smarthost: None,
            routes: Default::default(),
            max_received_headers: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Waits between delivery attempts; the last one repeats.
    pub retry_intervals: Vec<String>,
    /// After this long undelivered, a recipient fails permanently.
    pub max_lifetime: String,
    /// After this long undelivered, the sender gets one "delayed" DSN; `0` turns it off.
    pub delay_warning: String,
    /// Deliveries under way at once, in all.
    pub max_concurrent_deliveries: usize,
    /// Deliveries under way at once to one destination (smarthost, or domain).
    pub max_per_destination: usize,
    /// Timeout of each outbound SMTP step (connect, command, DATA).
    pub connect_timeout: String,
    /// How long a session that delivered a message waits for the next one to the same
    /// address; `0` closes every session after its message.
    pub connection_cache_time: String,
    /// A session is not used for new messages once it is this old.
    pub connection_reuse_time: String,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry_intervals: ["5m", "10m", "20m", "40m", "1h"].map(String::from).to_vec(),
            max_lifetime: "48h".into(),
            delay_warning: "4h".into(),
            max_concurrent_deliveries: 100,
            max_per_destination: 10,
            connect_timeout: "2m".into(),
            connection_cache_time: "2s".into(),
            connection_reuse_time: "300s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain for STARTTLS; without cert and key, STARTTLS is not offered.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Refuse MAIL before STARTTLS (530 5.7.0).
    pub require: bool,
    /// Outbound: refuse to deliver over a connection where STARTTLS did not succeed.
    pub require_outbound: bool,
}

/// Postfix's socketmap lookups (postsrsd 2.x's protocol); off while `listen` is empty.
/// The lookup rules and limits here serve `[tcp_table]` too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketmapConfig {
    /// `host:port` and `unix:/path` entries to serve the `forward` and `reverse` maps on.
    pub listen: Vec<String>,
    /// Permissions of `unix:` sockets, in octal.
    pub socket_mode: String,
    /// Owner (name or uid) and group (name or gid) of `unix:` sockets.
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    /// Senders not rewritten besides `srs.local_domains` (postsrsd's SRS_EXCLUDE_DOMAINS).
    pub exclude_domains: Vec<String>,
    /// Open lookup connections, socketmap and tcp_table together.
    pub max_connections: usize,
    /// How long a connection may wait between requests before it is closed.
    pub idle_timeout: String,
    /// How long a started request may take to arrive, and its reply to be taken.
    pub request_timeout: String,
}

impl Default for SocketmapConfig {
    fn default() -> Self {
        SocketmapConfig {
            listen: Vec::new(),
            socket_mode: "0660".into(),
            socket_owner: None,
            socket_group: None,
            exclude_domains: Vec::new(),
            max_connections: 1000,
            idle_timeout: "30m".into(),
            request_timeout: "100s".into(),
        }
    }
}

/// Postfix's tcp_table lookups on two ports, as postsrsd 1.x; off while both are empty.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TcpTableConfig {
    /// `host:port` entries answering forward (sender) lookups.
    pub forward_listen: Vec<String>,
    /// `host:port` entries answering reverse (recipient) lookups.
    pub reverse_listen: Vec<String>,
}

/// Where a lookup service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parses a duration such as `"5m"`, `"48h"`, `"30s"`, naming `key` on error.
pub fn duration(key: &str, text: &str) -> Result<std::time::Duration, ConfigError> {
    humantime::parse_duration(text.trim())
        .map_err(|e| ConfigError::key(key, format!("{text:?}: {e}")))
}

/// `queue.delay_warning`: a duration, or `0` for none.
pub fn delay_warning(text: &str) -> Result<Option<std::time::Duration>, ConfigError> {
    optional_duration("queue.delay_warning", text)
}

/// A duration, or `0` (any zero duration) for none.
pub fn optional_duration(
    key: &str,
    text: &str,
) -> Result<Option<std::time::Duration>, ConfigError> {
    if text.trim() == "0" {
        return Ok(None);
    }
    let d = duration(key, text)?;
    Ok((!d.is_zero()).then_some(d))
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
        cfg.validate()?;
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

    /// `relay.trusted_networks` parsed: CIDRs, or single addresses.
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.relay
            .trusted_networks
            .iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|e| ConfigError::key("relay.trusted_networks", format!("{n:?}: {e}")))
            })
            .collect()
    }

    /// `socketmap.listen` parsed; `unix:` paths are taken from the file's directory.
    pub fn socketmap_listen(&self) -> Result<Vec<ListenAddr>, ConfigError> {
        self.socketmap
            .listen
            .iter()
            .map(|l| match l.strip_prefix("unix:") {
                Some("") => Err(ConfigError::key(
                    "socketmap.listen",
                    format!("{l:?}: unix: needs a path"),
                )),
                Some(path) => Ok(ListenAddr::Unix(self.resolve(Path::new(path)))),
                None => tcp_listen("socketmap.listen", l).map(ListenAddr::Tcp),
            })
            .collect()
    }

    /// `tcp_table.forward_listen` and `tcp_table.reverse_listen` parsed.
    pub fn tcp_table_listen(
        &self,
    ) -> Result<(Vec<std::net::SocketAddr>, Vec<std::net::SocketAddr>), ConfigError> {
        let parse = |key: &str, list: &[String]| -> Result<Vec<_>, ConfigError> {
            list.iter().map(|l| tcp_listen(key, l)).collect()
        };
        Ok((
            parse("tcp_table.forward_listen", &self.tcp_table.forward_listen)?,
            parse("tcp_table.reverse_listen", &self.tcp_table.reverse_listen)?,
        ))
    }

    /// Whether any Postfix lookup service (socketmap or tcp_table) is configured.
    pub fn lookups_enabled(&self) -> bool {
        !(self.socketmap.listen.is_empty()
            && self.tcp_table.forward_listen.is_empty()
            && self.tcp_table.reverse_listen.is_empty())
    }

    /// `server.max_refused_rcpts` (0 = off) and `server.refused_rcpts_window` parsed.
    pub fn refused_rcpts(&self) -> Result<(u32, std::time::Duration), ConfigError> {
        let limit = u32::try_from(self.server.max_refused_rcpts).map_err(|_| {
            ConfigError::key("server.max_refused_rcpts", "must be at most 4294967295")
        })?;
        let key = "server.refused_rcpts_window";
        let window = duration(key, &self.server.refused_rcpts_window)?;
        if window < std::time::Duration::from_secs(1) {
            return Err(ConfigError::key(key, "must be at least 1s"));
        }
        Ok((limit, window))
    }

    /// `socketmap.socket_mode` parsed: octal permission bits.
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        let text = self.socketmap.socket_mode.trim();
        u32::from_str_radix(text, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError::key(
                    "socketmap.socket_mode",
                    format!("{text:?}: expected octal permissions such as \"0660\""),
                )
            })
    }

    /// Checks every key whose type alone does not make it valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.srs.options()?;
        if self.server.listen.is_empty() {
            return Err(ConfigError::key(
                "server.listen",
                "needs at least one host:port",
            ));
        }
        for l in &self.server.listen {
            l.parse::<std::net::SocketAddr>().map_err(|e| {
                ConfigError::key(
                    "server.listen",
                    format!("{l:?}: {e} (expected host:port, e.g. 127.0.0.1:2525 or [::1]:2525)"),
                )
            })?;
        }
        if self.server.hostname.trim().is_empty() {
            return Err(ConfigError::key("server.hostname", "must not be empty"));
        }
        if self.server.max_recipients < 1 {
            return Err(ConfigError::key(
                "server.max_recipients",
                "must be at least 1",
            ));
        }
        if self.server.max_line_length < 512 {
            return Err(ConfigError::key(
                "server.max_line_length",
                "must be at least 512 (RFC 5321)",
            ));
        }
        duration("server.command_timeout", &self.server.command_timeout)?;
        duration("server.data_timeout", &self.server.data_timeout)?;
        duration("server.shutdown_grace", &self.server.shutdown_grace)?;
        self.refused_rcpts()?;
        self.srs.bounce_senders()?;
        self.trusted_networks()?;
        let has_port = |h: &str| {
            h.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_some()
        };
        if let Some(h) = &self.relay.smarthost
            && !has_port(h)
        {
            return Err(ConfigError::key(
                "relay.smarthost",
                format!("{h:?}: expected host:port"),
            ));
        }
        if let Some((d, h)) = self.relay.routes.iter().find(|(_, h)| !has_port(h)) {
            return Err(ConfigError::key(
                "relay.routes",
                format!("{d}: {h:?}: expected host:port"),
            ));
        }
        if self.queue.retry_intervals.is_empty() {
            return Err(ConfigError::key(
                "queue.retry_intervals",
                "needs at least one interval",
            ));
        }
        for r in &self.queue.retry_intervals {
            duration("queue.retry_intervals", r)?;
        }
        duration("queue.max_lifetime", &self.queue.max_lifetime)?;
        delay_warning(&self.queue.delay_warning)?;
        duration("queue.connect_timeout", &self.queue.connect_timeout)?;
        optional_duration(
            "queue.connection_cache_time",
            &self.queue.connection_cache_time,
        )?;
        duration(
            "queue.connection_reuse_time",
            &self.queue.connection_reuse_time,
        )?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::key(
                "tls.cert",
                "tls.cert and tls.key go together",
            ));
        }
        if self.tls.require && self.tls.cert.is_none() {
            return Err(ConfigError::key(
                "tls.require",
                "needs tls.cert and tls.key",
            ));
        }
        self.validate_lookups()
    }

    fn validate_lookups(&self) -> Result<(), ConfigError> {
        self.socketmap_listen()?;
        self.tcp_table_listen()?;
        self.socket_mode()?;
        for (key, text) in [
            ("socketmap.idle_timeout", &self.socketmap.idle_timeout),
            ("socketmap.request_timeout", &self.socketmap.request_timeout),
        ] {
            if duration(key, text)?.is_zero() {
                return Err(ConfigError::key(key, "must be longer than zero"));
            }
        }
        if self.socketmap.max_connections < 1 {
            return Err(ConfigError::key(
                "socketmap.max_connections",
                "must be at least 1",
            ));
        }
        if self
            .socketmap
            .exclude_domains
            .iter()
            .any(|d| d.trim().is_empty())
        {
            return Err(ConfigError::key(
                "socketmap.exclude_domains",
                "must not hold an empty domain",
            ));
        }
        let no_domain = self
            .srs
            .default_domain
            .as_deref()
            .is_none_or(|d| d.trim().is_empty());
        if self.lookups_enabled() && no_domain {
            let key = if self.socketmap.listen.is_empty() {
                "tcp_table.forward_listen"
            } else {
                "socketmap.listen"
            };
            return Err(ConfigError::key(
                key,
                "needs srs.default_domain, the domain of rewritten senders (postsrsd's -d)",
            ));
        }
        Ok(())
    }
}

/// `srs.bounce_senders`: who may write to our SRS addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceSenders {
    /// Bounces and replies alike (out-of-office replies come from a real sender).
    Any,
    /// Only the null sender `<>`: bounces and DSNs.
    Null,
}

impl SrsConfig {
    /// `srs.bounce_senders` parsed.
    pub fn bounce_senders(&self) -> Result<BounceSenders, ConfigError> {
        match self.bounce_senders.trim() {
            "any" => Ok(BounceSenders::Any),
            "null" => Ok(BounceSenders::Null),
            other => Err(ConfigError::key(
                "srs.bounce_senders",
                format!("must be \"any\" or \"null\", got {other:?}"),
            )),
        }
    }

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

fn tcp_listen(key: &str, text: &str) -> Result<std::net::SocketAddr, ConfigError> {
    text.parse().map_err(|e| {
        ConfigError::key(
            key,
            format!("{text:?}: {e} (expected host:port, e.g. 127.0.0.1:10003 or [::1]:10003)"),
        )
    })
}

fn from_config_error(e: config::ConfigError) -> ConfigError {
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
