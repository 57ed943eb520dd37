//! `srs-relay serve`: wires configuration, codec, policy, spool, delivery and the SMTP
//! listeners together, and shuts them down in order on SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{self, Config, duration};
use crate::delivery;
use crate::policy::Policy;
use crate::sender_store::SenderStore;
use crate::smtp::Server;
use crate::spool::Spool;
use crate::srs::Srs;

/// Reads the secrets file, creating it with a fresh random secret on first run; warns
/// when the file is open to group or others.
pub fn load_or_create_secrets(cfg: &Config) -> Result<Vec<Vec<u8>>, String> {
    let path = cfg.secrets_path();
    if create_secrets_file(&path)? {
        // The path only: the secret itself is never logged.
        tracing::info!(path = %path.display(), "created a new secrets file (mode 0600)");
    }
    warn_if_open(&path);
    config::read_secrets(&path).map_err(|e| e.to_string())
}

/// Creates `path` (mode 0600) holding one new secret, unless it exists; true if this call
/// made it. The file appears whole or not at all: the secret is written to a new file of
/// its own (`create_new`), fsynced, then hard-linked to `path`, which fails if `path`
/// exists. So of two processes starting at once, one secret wins and both read it.
fn create_secrets_file(path: &Path) -> Result<bool, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("srs.secrets_file: {}: not a file name", path.display()))?;
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).map_err(|e| format!("no randomness: {e}"))?;
    let tmp = dir.join(format!(
        ".{}.{}.new",
        name.to_string_lossy(),
        data_encoding::HEXLOWER.encode(&tag)
    ));
    let line = format!("{}\n", config::new_secret().map_err(|e| e.to_string())?);
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(line.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match made {
        Ok(()) => {
            // The new name durable too (as the spool does it).
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        // Another process made it first, whole (it was linked only once written).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!(
            "srs.secrets_file: cannot create {}: {e}",
            path.display()
        )),
    }
}

/// Warns (naming the file and its mode, never its content) when the secrets file is
/// open to group or others: anyone who reads it can sign addresses.
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return; // reading it will say why
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            "secrets file is open to group or others: run chmod 600 on it"
        );
    }
}

/// Runs the relay until SIGTERM or SIGINT.
pub async fn serve(cfg: Config) -> Result<(), String> {
    let secrets = load_or_create_secrets(&cfg)?;
    let srs = Srs::new(&secrets, cfg.srs.options().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    drop(secrets);
    let policy = Policy::from_config(&cfg).map_err(|e| e.to_string())?;
    let spool_dir = cfg.resolve(&cfg.spool.dir);
    let (spool, recovered) =
        Spool::open(&spool_dir).map_err(|e| format!("spool.dir: {}: {e}", spool_dir.display()))?;
    tracing::info!(
        dir = %spool_dir.display(),
        queued = recovered.envelopes.len(),
        removed_incomplete = recovered.removed_incomplete,
        set_aside = ?recovered.set_aside,
        "spool recovered"
    );
    let spool = Arc::new(spool);
    let tls = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => {
            let config = crate::tls::server_config(&cfg.resolve(cert), &cfg.resolve(key))?;
            Some(tokio_rustls::TlsAcceptor::from(config))
        }
        _ => None,
    };

    let store = SenderStore::open(&cfg.srs.store, &cfg.base_dir)
        .await
        .map_err(|e| format!("srs.store: {e}"))?;
    tracing::info!(store = %store.describe(), "sender store open");
    tokio::spawn(purge_expired_senders(store.clone()));

    let settings = delivery::DeliverySettings::from_config(&cfg).map_err(|e| e.to_string())?;
    let (dsn_tx, mut dsn_rx) = tokio::sync::mpsc::unbounded_channel();
    let on_failure = crate::bounce::dsn_on_failure(
        spool.clone(),
        cfg.server.hostname.clone(),
        settings.max_lifetime,
        dsn_tx,
    );
    let queue = delivery::start(settings, spool.clone(), recovered.envelopes, on_failure);
    let dsn_queue = queue.clone();
    tokio::spawn(async move {
        while let Some(env) = dsn_rx.recv().await {
            dsn_queue.submit(env);
        }
    });
    let submit = queue.clone();
    let server = Arc::new(
        Server::new(
            &cfg,
            srs,
            policy,
            spool,
            store,
            tls,
            Arc::new(move |env| submit.submit(env)),
        )
        .map_err(|e| e.to_string())?,
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let lookups = crate::socketmap::Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let lookups = if lookups.is_empty() {
        None
    } else {
        Some(
            crate::socketmap::start(
                lookups,
                server.srs.clone(),
                server.store.clone(),
                stop_rx.clone(),
            )
            .await?,
        )
    };
    let mut listeners = Vec::new();
    for addr in &cfg.server.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("server.listen: {addr}: {e}"))?;
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
        listeners.push(tokio::spawn(
            server.clone().serve(listener, stop_rx.clone()),
        ));
    }

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections");
    let _ = stop_tx.send(true);
    for l in listeners {
        let _ = l.await;
    }
    let grace =
        duration("server.shutdown_grace", &cfg.server.shutdown_grace).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + grace;
    // Sessions and deliveries under way share one grace period.
    let sessions = async {
        while server.active_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if server.active_connections() > 0 {
            tracing::warn!(
                open = server.active_connections(),
                "grace period over; cutting remaining sessions"
            );
        }
    };
    let lookups = async {
        if let Some(l) = lookups {
            l.stopped().await;
        }
    };
    tokio::join!(sessions, queue.shutdown(), lookups);
    tracing::info!("stopped; the spool is kept and delivery resumes on restart");
    Ok(())
}

/// Keeps the embedded store from growing: expired entries go once an hour.
async fn purge_expired_senders(store: SenderStore) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired senders dropped from the store"),
            Err(e) => tracing::warn!(error = %e, "cannot purge the sender store"),
        }
    }
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn concurrent_first_starts_end_with_one_secret() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = Config::default();
            cfg.srs.secrets_file = dir.path().join("srs-secrets");
            let cfg = Arc::new(cfg);
            let start = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (cfg, start) = (cfg.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        load_or_create_secrets(&cfg)
                    })
                })
                .collect();
            let got: Vec<_> = threads
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect();
            assert_eq!(got[0].len(), 1);
            assert!(got.iter().all(|s| *s == got[0]), "different secrets");
            let path = cfg.secrets_path();
            assert_eq!(config::read_secrets(&path).unwrap(), got[0]);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // No temporary file left behind.
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }
}
