//! Reloading the configuration while the relay runs (SIGHUP, or a [`Reloader`] handle):
//! the configuration file, the aliases file, the secrets file (its first line signs from
//! then on, the others still verify) and the TLS certificate and key are read again, and
//! everything made from them is built and checked before anything changes. Then each part
//! gets its new settings, one after the other with nothing awaited in between. A
//! connection or delivery attempt under way finishes with the settings it started with;
//! the next one gets the new. Any error keeps everything as it was and is logged in one
//! line naming the file and the key or line. Keys that only a restart applies
//! ([`RESTART_ONLY`]) are named in one warning when they differ from the start; the rest
//! is reloaded all the same.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::bounce::DsnSettings;
use crate::config::Config;
use crate::delivery::{DeliverySettings, QueueHandle};
use crate::policy::Policy;
use crate::secrets;
use crate::smtp::{self, Server};
use crate::socketmap;
use crate::srs::Srs;

/// The running parts a reload gives new settings to; `None` where the command runs no
/// such part (`srs-relay socketmap` runs the lookups alone).
#[derive(Default)]
pub struct Parts {
    pub smtp: Option<Arc<Server>>,
    pub delivery: Option<QueueHandle>,
    pub dsn: Option<Arc<ArcSwap<DsnSettings>>>,
    pub lookups: Option<socketmap::Handle>,
}

/// Reloads the running process. Cheap to clone; reloads never overlap.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configuration the process started with: restart-only keys are compared to it.
    started: Config,
    /// The configuration in force; held for the whole of a reload.
    current: tokio::sync::Mutex<Config>,
    parts: Parts,
}

/// What a reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The configuration file read (none: defaults and environment only).
    pub file: Option<PathBuf>,
    /// Sections of the configuration whose keys changed.
    pub changed: Vec<&'static str>,
    /// Keys that differ from the start but apply only after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl fmt::Display for Reloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reloaded {}", shown(self.file.as_deref()))?;
        if !self.needs_restart.is_empty() {
            write!(f, "; needs a restart: {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

impl Reloader {
    /// A reloader for `parts`, running with `config`.
    pub fn new(config: Config, parts: Parts) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                started: config.clone(),
                current: tokio::sync::Mutex::new(config),
                parts,
            }),
        }
    }

    /// The configuration in force (as last read).
    pub async fn config(&self) -> Config {
        self.inner.current.lock().await.clone()
    }

    /// Reads the configuration file and what it names again and puts it in force, or
    /// nothing at all; either way the outcome is logged. `Err` says why nothing changed.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let mut current = self.inner.current.lock().await;
        let file = current.file.clone();
        let parts = &self.inner.parts;
        let wants = Wants {
            smtp: parts.smtp.is_some(),
            delivery: parts.delivery.is_some() || parts.dsn.is_some(),
            lookups: parts.lookups.is_some(),
        };
        let path = file.clone();
        // Files are read and certificates parsed off the runtime's threads.
        let built = tokio::task::spawn_blocking(move || build(path.as_deref(), wants))
            .await
            .unwrap_or_else(|e| Err(format!("reload failed: {e}")))
            // One log line, whatever the parser's message looks like.
            .map_err(|e| e.split_whitespace().collect::<Vec<_>>().join(" "));
        let new = match built {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(config = %shown(file.as_deref()), error = %e,
                    "reload refused; the running settings stay");
                return Err(e);
            }
        };
        let needs_restart = needs_restart(&self.inner.started, &new.config);
        if !needs_restart.is_empty() {
            tracing::warn!(config = %shown(file.as_deref()), keys = %needs_restart.join(","),
                "these keys apply only after a restart; the rest is reloaded");
        }
        let changed = changed_sections(&current, &new.config);
        let aliases = new.smtp.as_ref().map(|s| s.policy.alias_count());
        // Everything is built: from here on nothing can fail.
        if let (Some(server), Some(settings)) = (&parts.smtp, new.smtp) {
            server.reload(settings);
        }
        if let (Some(queue), Some(settings)) = (&parts.delivery, new.delivery) {
            queue.reload(settings);
        }
        if let (Some(dsn), Some(settings)) = (&parts.dsn, new.dsn) {
            dsn.store(Arc::new(settings));
        }
        if let (Some(lookups), Some(settings)) = (&parts.lookups, &new.lookups) {
            lookups.reload(settings, new.srs.clone());
        }
        tracing::info!(
            config = %shown(file.as_deref()),
            changed = %if changed.is_empty() { "none".to_owned() } else { changed.join(",") },
            secrets = new.secrets,
            aliases = %aliases.map_or("-".to_owned(), |n| n.to_string()),
            "reloaded"
        );
        *current = new.config;
        Ok(Reloaded {
            file,
            changed,
            needs_restart,
        })
    }
}

/// Which parts' settings a reload builds.
#[derive(Clone, Copy)]
struct Wants {
    smtp: bool,
    delivery: bool,
    lookups: bool,
}

/// Everything a reload puts in force, built and checked.
struct Built {
    config: Config,
    srs: Srs,
    /// Secrets in the file (the first signs).
    secrets: usize,
    smtp: Option<smtp::Settings>,
    delivery: Option<DeliverySettings>,
    dsn: Option<DsnSettings>,
    lookups: Option<socketmap::Settings>,
}

/// Reads `file` and what it names, and builds the settings of the parts `wants` asks for.
/// Errors name the key, and for the aliases file the line.
fn build(file: Option<&Path>, wants: Wants) -> Result<Built, String> {
    let config = Config::load(file).map_err(|e| e.to_string())?;
    let secrets = secrets::read(&config.secrets_path()).map_err(|e| e.to_string())?;
    let srs = codec(&config, &secrets)?;
    let smtp = if wants.smtp {
        let policy = Policy::from_config(&config).map_err(|e| e.to_string())?;
        let tls = crate::tls::acceptor(&config)?;
        Some(smtp::Settings::new(&config, srs.clone(), policy, tls).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let (delivery, dsn) = if wants.delivery {
        (
            Some(DeliverySettings::from_config(&config).map_err(|e| e.to_string())?),
            Some(DsnSettings::from_config(&config).map_err(|e| e.to_string())?),
        )
    } else {
        (None, None)
    };
    let lookups = if wants.lookups {
        Some(socketmap::Settings::from_config(&config).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(Built {
        secrets: secrets.len(),
        config,
        srs,
        smtp,
        delivery,
        dsn,
        lookups,
    })
}

/// The codec: `secrets` (the first signs) with the options of `[srs]`.
pub(crate) fn codec(cfg: &Config, secrets: &[Vec<u8>]) -> Result<Srs, String> {
    let options = cfg.srs.options().map_err(|e| e.to_string())?;
    Srs::new(secrets, options).map_err(|e| format!("srs.secrets_file: {e}"))
}

/// How a restart-only key is compared.
type Differs = fn(&Config, &Config) -> bool;

/// Keys a running process does not take over: its listeners are bound, its spool and
/// stores open, its user switched, its log set up, its trace writer and queue alert
/// started, its delivery limits and connection cache built.
pub const RESTART_ONLY: &[(&str, Differs)] = &[
    ("server.listen", |a, b| a.server.listen != b.server.listen),
    ("server.user", |a, b| a.server.user != b.server.user),
    ("server.group", |a, b| a.server.group != b.server.group),
    ("server.allow_root", |a, b| {
        a.server.allow_root != b.server.allow_root
    }),
    ("spool.dir", |a, b| {
        a.resolve(&a.spool.dir) != b.resolve(&b.spool.dir)
    }),
    ("srs.store", |a, b| a.srs.store != b.srs.store),
    ("queue.max_concurrent_deliveries", |a, b| {
        a.queue.max_concurrent_deliveries != b.queue.max_concurrent_deliveries
    }),
    ("queue.max_per_destination", |a, b| {
        a.queue.max_per_destination != b.queue.max_per_destination
    }),
    ("queue.connection_cache_time", |a, b| {
        a.queue.connection_cache_time != b.queue.connection_cache_time
    }),
    ("queue.connection_reuse_time", |a, b| {
        a.queue.connection_reuse_time != b.queue.connection_reuse_time
    }),
    ("socketmap.listen", |a, b| {
        a.socketmap.listen != b.socketmap.listen
    }),
    ("socketmap.socket_mode", |a, b| {
        a.socketmap.socket_mode != b.socketmap.socket_mode
    }),
    ("socketmap.socket_owner", |a, b| {
        a.socketmap.socket_owner != b.socketmap.socket_owner
    }),
    ("socketmap.socket_group", |a, b| {
        a.socketmap.socket_group != b.socketmap.socket_group
    }),
    ("socketmap.max_connections", |a, b| {
        a.socketmap.max_connections != b.socketmap.max_connections
    }),
    ("socketmap.idle_timeout", |a, b| {
        a.socketmap.idle_timeout != b.socketmap.idle_timeout
    }),
    ("socketmap.request_timeout", |a, b| {
        a.socketmap.request_timeout != b.socketmap.request_timeout
    }),
    ("tcp_table.forward_listen", |a, b| {
        a.tcp_table.forward_listen != b.tcp_table.forward_listen
    }),
    ("tcp_table.reverse_listen", |a, b| {
        a.tcp_table.reverse_listen != b.tcp_table.reverse_listen
    }),
    ("trace.enabled", |a, b| a.trace.enabled != b.trace.enabled),
    ("trace.store", |a, b| a.trace.store != b.trace.store),
    ("trace.retention", |a, b| {
        a.trace.retention != b.trace.retention
    }),
    ("log.format", |a, b| a.log.format != b.log.format),
    ("admin.listen", |a, b| a.admin.listen != b.admin.listen),
    ("admin.credentials_file", |a, b| {
        a.admin.credentials_file != b.admin.credentials_file
    }),
    ("admin.tls", |a, b| a.admin.tls != b.admin.tls),
    ("alerts.queue_threshold", |a, b| {
        a.alerts.queue_threshold != b.alerts.queue_threshold
    }),
    ("alerts.notify", |a, b| a.alerts.notify != b.alerts.notify),
    ("alerts.check_interval", |a, b| {
        a.alerts.check_interval != b.alerts.check_interval
    }),
];

/// The restart-only keys whose value in `new` differs from `started`'s.
fn needs_restart(started: &Config, new: &Config) -> Vec<&'static str> {
    RESTART_ONLY
        .iter()
        .filter(|(_, differs)| differs(started, new))
        .map(|(key, _)| *key)
        .collect()
}

/// The sections whose keys differ between `old` and `new`, for the log.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let sections: [(&str, bool); 16] = [
        ("srs", old.srs != new.srs),
        ("server", old.server != new.server),
        ("spool", old.spool != new.spool),
        ("relay", old.relay != new.relay),
        ("queue", old.queue != new.queue),
        ("tls", old.tls != new.tls),
        ("socketmap", old.socketmap != new.socketmap),
        ("tcp_table", old.tcp_table != new.tcp_table),
        ("trace", old.trace != new.trace),
        ("log", old.log != new.log),
        ("admin", old.admin != new.admin),
        ("alerts", old.alerts != new.alerts),
        ("dns", old.dns != new.dns),
        ("auth", old.auth != new.auth),
        ("arc", old.arc != new.arc),
        ("dsn", old.dsn != new.dsn),
    ];
    sections
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// The configuration file for the log.
fn shown(file: Option<&Path>) -> String {
    match file {
        Some(f) => f.display().to_string(),
        None => "(no file: defaults and environment)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_are_named_and_nothing_else() {
        let started = Config::default();
        let mut new = started.clone();
        new.relay.trusted_networks = vec!["10.0.0.0/8".into()];
        new.server.hostname = "other.example".into();
        assert!(needs_restart(&started, &new).is_empty());
        assert_eq!(changed_sections(&started, &new), ["server", "relay"]);
        new.server.listen = vec!["127.0.0.1:2600".into()];
        new.spool.dir = "elsewhere".into();
        new.trace.enabled = false;
        assert_eq!(
            needs_restart(&started, &new),
            ["server.listen", "spool.dir", "trace.enabled"]
        );
    }

    #[test]
    fn every_restart_only_key_is_a_key_of_the_file() {
        let documented = include_str!("../config/srs-relay.toml");
        for (key, _) in RESTART_ONLY {
            let (section, name) = key.split_once('.').unwrap();
            let in_section = documented
                .split("\n[")
                .find(|s| s.starts_with(&format!("{section}]")))
                .unwrap_or_else(|| panic!("no [{section}] in config/srs-relay.toml"));
            let named = in_section.lines().any(|l| {
                let l = l.trim_start_matches("# ");
                l.split_once('=').is_some_and(|(k, _)| k.trim() == name)
            });
            assert!(named, "{key} is not in config/srs-relay.toml");
        }
    }
}
