//! Checks of the keys whose type alone does not make them valid.

use super::{Config, ConfigError, delay_warning, duration, optional_duration};

impl Config {
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
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::key(
                "log.format",
                format!("{:?}: expected \"text\" or \"json\"", self.log.format),
            ));
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
        self.validate_trace_store()?;
        if duration("trace.retention", &self.trace.retention)?.is_zero() {
            return Err(ConfigError::key(
                "trace.retention",
                "must be longer than zero",
            ));
        }
        self.admin_listen()?;
        self.alerts_settings()?;
        self.dns_settings()?;
        self.dmarc_reject_action()?;
        duration("auth.timeout", &self.auth.timeout)?;
        if !matches!(self.dsn.to_unauthenticated.trim(), "drop" | "send") {
            return Err(ConfigError::key(
                "dsn.to_unauthenticated",
                format!(
                    "{:?}: expected \"drop\" or \"send\"",
                    self.dsn.to_unauthenticated
                ),
            ));
        }
        self.validate_lookups()
    }

    /// `trace.store`: a file, or (in the server) a PostgreSQL URL parsed in full.
    fn validate_trace_store(&self) -> Result<(), ConfigError> {
        #[cfg(feature = "server")]
        crate::trace::Store::from_config(self)?;
        #[cfg(not(feature = "server"))]
        {
            let store = self.trace.store.trim();
            if !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
                self.trace_path()?;
            }
        }
        Ok(())
    }

    /// `admin.listen` parsed; `None` when it is empty (off).
    pub fn admin_listen(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let l = self.admin.listen.trim();
        if l.is_empty() {
            return Ok(None);
        }
        l.parse().map(Some).map_err(|e| {
            ConfigError::key(
                "admin.listen",
                format!("{l:?}: {e} (expected host:port, e.g. 127.0.0.1:9025, or \"\" for off)"),
            )
        })
    }

    /// `alerts.check_interval` and `alerts.notify` checked: the interval, and the notify
    /// address (`None` when not set).
    pub fn alerts_settings(&self) -> Result<(std::time::Duration, Option<String>), ConfigError> {
        let every = duration("alerts.check_interval", &self.alerts.check_interval)?;
        if every.is_zero() {
            return Err(ConfigError::key(
                "alerts.check_interval",
                "must be longer than zero",
            ));
        }
        let notify = match self.alerts.notify.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => {
                let ok = a
                    .rsplit_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
                    && !a
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "<>,;".contains(c));
                if !ok {
                    return Err(ConfigError::key(
                        "alerts.notify",
                        format!("{a:?}: expected one address, user@domain"),
                    ));
                }
                Some(a.to_owned())
            }
        };
        Ok((every, notify))
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
