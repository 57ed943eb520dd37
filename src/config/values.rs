//! What keys mean once parsed: durations, listen addresses, networks, paths relative to
//! the file, the codec options.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, SrsConfig};
use crate::srs::{Format, HashEncoding, Options};

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

/// `[dns]`: which name servers, and how long a query may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// `dns.servers`; empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<std::net::SocketAddr>,
    /// `dns.timeout`: one query's wait for an answer.
    pub timeout: std::time::Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            servers: Vec::new(),
            timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// `auth.dmarc_reject_action`: what becomes of mail whose DMARC fails with `p=reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcRejectAction {
    /// Forward it sealed; the receiver decides with ARC.
    Seal,
    /// Header From becomes the forwarding address, the message is signed by us.
    RewriteFrom,
    /// `550 5.7.1` at DATA.
    Reject,
}

impl Config {
    /// `[dns]` parsed: the servers as socket addresses (port 53 unless given), the timeout.
    pub fn dns_settings(&self) -> Result<DnsSettings, ConfigError> {
        let servers = self
            .dns
            .servers
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        ConfigError::key(
                            "dns.servers",
                            format!("{s:?}: expected an IP address, or ip:port ([ipv6]:port)"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = duration("dns.timeout", &self.dns.timeout)?;
        if timeout.is_zero() {
            return Err(ConfigError::key("dns.timeout", "must be longer than zero"));
        }
        Ok(DnsSettings { servers, timeout })
    }

    /// `auth.dmarc_reject_action` parsed.
    pub fn dmarc_reject_action(&self) -> Result<DmarcRejectAction, ConfigError> {
        match self.auth.dmarc_reject_action.trim() {
            "seal" => Ok(DmarcRejectAction::Seal),
            "rewrite-from" => Ok(DmarcRejectAction::RewriteFrom),
            "reject" => Ok(DmarcRejectAction::Reject),
            other => Err(ConfigError::key(
                "auth.dmarc_reject_action",
                format!("{other:?}: expected \"seal\", \"rewrite-from\" or \"reject\""),
            )),
        }
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

    /// `trace.store` as a file: `sqlite` is `trace.sqlite` next to the spool directory.
    /// A `postgres://` URL is not a file: the server's `trace::Store` reads those.
    pub fn trace_path(&self) -> Result<PathBuf, ConfigError> {
        let store = self.trace.store.trim();
        if store.is_empty() {
            return Err(ConfigError::key("trace.store", "must not be empty"));
        }
        if let Some((scheme, _)) = store.split_once("://") {
            // Only the scheme: the rest may hold a password.
            return Err(ConfigError::key(
                "trace.store",
                format!(
                    "{scheme}://...: expected \"sqlite\", the path of an SQLite file, or a \
                     postgres:// URL"
                ),
            ));
        }
        if store == "sqlite" {
            let spool = self.resolve(&self.spool.dir);
            let parent = spool.parent().map(Path::to_path_buf).unwrap_or_default();
            return Ok(parent.join("trace.sqlite"));
        }
        Ok(self.resolve(Path::new(store)))
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
