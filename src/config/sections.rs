//! The configuration file's sections and keys as read, with their defaults.

use std::path::PathBuf;

use serde::Deserialize;

use crate::srs::Options;

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
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
    pub trace: TraceConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub alerts: AlertsConfig,
    pub dns: DnsConfig,
    pub auth: AuthConfig,
    pub arc: ArcConfig,
    pub dsn: DsnConfig,
    /// Directory of the configuration file; relative paths in it are taken from here.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it was loaded from, if any: what a reload reads again.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Started as root: the user (name or uid) to switch to once the listeners are bound
    /// and the spool is open.
    pub user: Option<String>,
    /// Its group (name or gid); by default the user's own.
    pub group: Option<String>,
    /// Run as root for good (not advised); without it or `user`, root is refused.
    pub allow_root: bool,
}

/// The machine's host name (EHLO and Received default to it, as Postfix's `myhostname`
/// does), or `localhost` if it has none.
fn machine_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["127.0.0.1:2525".into()],
            hostname: machine_hostname(),
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
            user: None,
            group: None,
            allow_root: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TcpTableConfig {
    /// `host:port` entries answering forward (sender) lookups.
    pub forward_listen: Vec<String>,
    /// `host:port` entries answering reverse (recipient) lookups.
    pub reverse_listen: Vec<String>,
}

/// The message trace (`srs-relay trace`): every event of every message, kept for a while.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Record events at all.
    pub enabled: bool,
    /// `sqlite`: a file `trace.sqlite` next to the spool directory; the path of an
    /// SQLite file (relative to this file's directory); or a `postgres://` URL, which
    /// may hold a password (so Debug shows only its scheme).
    pub store: String,
    /// Events older than this are pruned, hourly.
    pub retention: String,
}

impl std::fmt::Debug for TraceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = match self.store.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://..."),
            None => self.store.clone(),
        };
        f.debug_struct("TraceConfig")
            .field("enabled", &self.enabled)
            .field("store", &store)
            .field("retention", &self.retention)
            .finish()
    }
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            enabled: true,
            store: "sqlite".into(),
            retention: "30d".into(),
        }
    }
}

/// `[log]`: how the relay writes its log lines (always to stderr).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (one readable line per event) or `json` (one JSON object per line, every
    /// field at the top level: for Loki, Elasticsearch and friends).
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
        }
    }
}

/// The admin HTTP listener: the dashboard and its API, `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `host:port` to listen on; empty turns it off.
    pub listen: String,
    /// The login password, first line (made on first start, mode 0600).
    pub credentials_file: PathBuf,
    /// Speak HTTPS with `tls.cert` and `tls.key`.
    pub tls: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9025".into(),
            credentials_file: PathBuf::from("admin-credentials"),
            tls: false,
        }
    }
}

/// The queue alert: a log line, a gauge and a mail when the queue grows past a size.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Raised when more messages than this are queued; cleared under 90% of it; 0: off.
    pub queue_threshold: usize,
    /// Who gets the alert mail (one address); none: log line and gauge only.
    pub notify: Option<String>,
    /// How often the queue size is checked.
    pub check_interval: String,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            queue_threshold: 2000,
            notify: None,
            check_interval: "5s".into(),
        }
    }
}

/// `[dns]`: the resolver delivery (MX lookups) and mail authentication (SPF, DKIM, DMARC,
/// ARC records) ask.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers as `ip` or `ip:port` (UDP, TCP on truncation); empty: the system's
    /// (`/etc/resolv.conf`).
    pub servers: Vec<String>,
    /// How long one query waits for an answer before it counts as failed (temperror).
    pub timeout: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: "5s".into(),
        }
    }
}

/// `[auth]`: what the relay checks when mail arrives (SPF, DKIM, DMARC, ARC) and what it
/// does with mail that fails.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Verify arriving mail and add an `Authentication-Results` header. Always on when
    /// `arc.key` is set (the seal carries the results).
    pub verify: bool,
    /// The authserv-id of the results headers; empty: `server.hostname`.
    pub authserv_id: String,
    /// Mail whose DMARC fails with `p=reject`: `seal` (forward it sealed: the receiver
    /// decides with ARC), `rewrite-from` or `reject`.
    pub dmarc_reject_action: String,
    /// The whole verification of one message gives up after this long (every result
    /// still missing is then `temperror`).
    pub timeout: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            verify: false,
            authserv_id: String::new(),
            dmarc_reject_action: "seal".into(),
            timeout: "20s".into(),
        }
    }
}

/// `[dsn]`: who gets the relay's DSNs, and what they say.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DsnConfig {
    /// A DSN for a sender that was not authenticated at arrival (with `[auth]` on):
    /// `drop` (logged; no backscatter to forged senders) or `send`.
    pub to_unauthenticated: String,
    /// A DSN for mail to an alias names the alias, not the address it forwards to.
    pub hide_forward_targets: bool,
}

impl Default for DsnConfig {
    fn default() -> Self {
        DsnConfig {
            to_unauthenticated: "drop".into(),
            hide_forward_targets: true,
        }
    }
}

/// `[arc]`: the ARC seal (RFC 8617) put on every forwarded message.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ArcConfig {
    /// Private key, PEM (PKCS#8 Ed25519 or RSA, or PKCS#1 RSA), relative to this file;
    /// none: no sealing. `srs-relay arc-keygen` makes one.
    pub key: Option<PathBuf>,
    /// The key's selector: its public key is at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The signing domain (`d=`); empty: `srs.default_domain`.
    pub domain: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostname_defaults_to_the_machines() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(super::ServerConfig::default().hostname, kernel.trim());
    }
}
