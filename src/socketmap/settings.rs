//! The lookup services' settings, read and checked from the configuration.

use std::net::SocketAddr;
use std::time::Duration;

use super::lookup::Rules;
use super::users::{group_id, user_id};
use crate::config::{Config, ConfigError, ListenAddr, duration};
use crate::srs::Srs;

/// The lookup services' configuration, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Rules,
    /// Socketmap listeners.
    pub socketmap: Vec<ListenAddr>,
    /// tcp_table listeners for the forward map.
    pub tcp_forward: Vec<SocketAddr>,
    /// tcp_table listeners for the reverse map.
    pub tcp_reverse: Vec<SocketAddr>,
    pub socket_mode: u32,
    pub socket_owner: Option<u32>,
    pub socket_group: Option<u32>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Result<Settings, ConfigError> {
        let (tcp_forward, tcp_reverse) = cfg.tcp_table_listen()?;
        let domain = cfg
            .srs
            .default_domain
            .as_deref()
            .map(|d| d.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let settings = Settings {
            rules: Rules {
                domain,
                exclude_domains: cfg
                    .socketmap
                    .exclude_domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect(),
            },
            socketmap: cfg.socketmap_listen()?,
            tcp_forward,
            tcp_reverse,
            socket_mode: cfg.socket_mode()?,
            socket_owner: cfg
                .socketmap
                .socket_owner
                .as_deref()
                .map(|name| user_id("socketmap.socket_owner", name))
                .transpose()?,
            socket_group: cfg
                .socketmap
                .socket_group
                .as_deref()
                .map(|name| group_id("socketmap.socket_group", name))
                .transpose()?,
            max_connections: cfg.socketmap.max_connections,
            idle_timeout: duration("socketmap.idle_timeout", &cfg.socketmap.idle_timeout)?,
            request_timeout: duration("socketmap.request_timeout", &cfg.socketmap.request_timeout)?,
        };
        if !settings.is_empty() {
            // The codec decides what a valid SRS domain is: ask it once, now.
            let probe =
                Srs::new(&["probe"], cfg.srs.options()?).map_err(|e| ConfigError::key("srs", e))?;
            if let Err(e) =
                probe.forward_for_domain_at("probe@example.org", &settings.rules.domain, 0)
            {
                return Err(ConfigError::key("srs.default_domain", e));
            }
        }
        Ok(settings)
    }

    /// Whether no lookup service is configured.
    pub fn is_empty(&self) -> bool {
        self.socketmap.is_empty() && self.tcp_forward.is_empty() && self.tcp_reverse.is_empty()
    }
}
