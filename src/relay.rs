//! The process lifecycle of the long-running commands: `srs-relay serve` wires
//! configuration, codec, policy, spool, delivery, the SMTP listeners, the lookup
//! services, the admin listener (metrics, health) and the queue alert together, reloads
//! on SIGHUP (see [`crate::reload`]) and shuts them down in order on SIGTERM/SIGINT;
//! `srs-relay socketmap` runs the lookup services alone. Both start from `Basics` (codec
//! and sender store).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::admin::{self, AdminState, Readiness};
use crate::alerts::{self, AlertSettings};
use crate::config::{Config, duration};
use crate::delivery;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::privileges;
use crate::reload::{self, Parts, Reloader};
use crate::secrets;
use crate::sender_store::SenderStore;
use crate::smtp::Server;
use crate::socketmap;
use crate::spool::Spool;
use crate::srs::Srs;
use crate::trace;

/// What every long-running command starts from: the codec, signing with the secrets file
/// (made on first start), and the sender store.
struct Basics {
    srs: Srs,
    store: SenderStore,
}

impl Basics {
    async fn open(cfg: &Config) -> Result<Basics, String> {
        let secrets = secrets::load_or_create(&cfg.secrets_path())?;
        let srs = reload::codec(cfg, &secrets)?;
        drop(secrets);
        let store = SenderStore::open(&cfg.srs.store, &cfg.base_dir)
            .await
            .map_err(|e| format!("srs.store: {e}"))?;
        tracing::info!(store = %store.describe(), "sender store open");
        Ok(Basics { srs, store })
    }
}

/// Runs the lookup services alone (`srs-relay socketmap`) until SIGTERM or SIGINT;
/// SIGHUP reloads them.
pub async fn serve_lookups(cfg: Config) -> Result<(), String> {
    let signals = Signals::install()?;
    let settings = socketmap::Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    if settings.is_empty() {
        return Err(
            "nothing to serve: set socketmap.listen, or tcp_table.forward_listen and tcp_table.reverse_listen"
                .into(),
        );
    }
    let switch_to = privileges::plan(&cfg)?;
    let Basics { srs, store } = Basics::open(&cfg).await?;
    if let Some(target) = &switch_to {
        // The lookup ports are above 1024: bound after the switch.
        privileges::switch(target, &state_paths(&cfg, None)?)?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let services = socketmap::start(settings, srs, store, stop_rx).await?;
    let reloader = Reloader::new(
        cfg,
        Parts {
            lookups: Some(services.handle()),
            ..Parts::default()
        },
    );
    signals.until_stopped(&reloader).await;
    tracing::info!("shutting down the lookup services");
    let _ = stop_tx.send(true);
    services.stopped().await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the relay until SIGTERM or SIGINT; SIGHUP reloads it.
pub async fn serve(cfg: Config) -> Result<(), String> {
    let signals = Signals::install()?;
    let switch_to = privileges::plan(&cfg)?;
    let lookups = socketmap::Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let admin_listen = cfg.admin_listen().map_err(|e| e.to_string())?;
    let admin_password = match admin_listen {
        Some(_) => secrets::load_or_create_for(
            &cfg.resolve(&cfg.admin.credentials_file),
            "admin.credentials_file",
        )?
        .swap_remove(0),
        None => Vec::new(),
    };
    let alert_settings = AlertSettings::from_config(&cfg).map_err(|e| e.to_string())?;
    let Basics { srs, store } = Basics::open(&cfg).await?;
    let policy = Policy::from_config(&cfg).map_err(|e| e.to_string())?;
    let spool_dir = cfg.resolve(&cfg.spool.dir);
    let (spool, recovered) = open_spool(&spool_dir).await?;
    tracing::info!(
        dir = %spool_dir.display(),
        queued = recovered.envelopes.len(),
        removed_incomplete = recovered.removed_incomplete,
        set_aside = ?recovered.set_aside,
        "spool recovered"
    );
    let spool = Arc::new(spool);
    let tls = crate::tls::acceptor(&cfg)?;
    // The admin listener keeps the certificate it started with (a reload renews SMTP's).
    let admin_tls = match (cfg.admin.tls, &tls) {
        (false, _) => None,
        (true, Some(acceptor)) => Some(acceptor.clone()),
        (true, None) => {
            return Err("admin.tls: needs tls.cert and tls.key".into());
        }
    };

    // The SMTP listeners (port 25) are bound while still root; then, if asked, the state
    // goes to server.user and the process becomes it, before anything is accepted or
    // delivered. The lookup and admin listeners are bound after the switch.
    let mut bound = Vec::new();
    for addr in &cfg.server.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("server.listen: {addr}: {e}"))?;
        bound.push(listener);
    }
    if let Some(target) = &switch_to {
        privileges::switch(target, &state_paths(&cfg, Some(&spool_dir))?)?;
    }

    tokio::spawn(purge_expired_senders(store.clone()));
    // For the dashboard's Explain page (stored-form tokens).
    let sender_store = store.clone();

    // The trace is written off the SMTP and delivery paths; see `trace::Tracer`. The same
    // events feed the metrics, which are kept when there is a listener to serve them.
    let metrics = admin_listen.map(|_| Arc::new(Metrics::new()));
    let mut tracer = trace::from_config(&cfg).map_err(|e| e.to_string())?;
    if let Some(m) = &metrics {
        tracer = tracer.with_metrics(m.clone());
    }
    let mut settings = delivery::DeliverySettings::from_config(&cfg).map_err(|e| e.to_string())?;
    settings.tracer = tracer.clone();
    let (dsn_tx, mut dsn_rx) = tokio::sync::mpsc::unbounded_channel();
    let dsn_settings = Arc::new(ArcSwap::from_pointee(
        crate::bounce::DsnSettings::from_config(&cfg).map_err(|e| e.to_string())?,
    ));
    let on_failure =
        crate::bounce::dsn_on_failure(spool.clone(), dsn_settings.clone(), dsn_tx, tracer.clone());
    let queue = delivery::start(settings, spool.clone(), recovered.envelopes, on_failure);
    let dsn_queue = queue.clone();
    tokio::spawn(async move {
        while let Some(env) = dsn_rx.recv().await {
            dsn_queue.submit(env);
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let lookups = if lookups.is_empty() {
        None
    } else {
        Some(socketmap::start(lookups, srs.clone(), store.clone(), stop_rx.clone()).await?)
    };
    let submit = queue.clone();
    let server = Server::new(
        &cfg,
        srs,
        policy,
        spool.clone(),
        store,
        tls,
        Arc::new(move |env| submit.submit(env)),
    )
    .map_err(|e| e.to_string())?
    .with_tracer(tracer.clone());
    let server = Arc::new(server);
    let mut listeners = Vec::new();
    // Listeners accepting now, for /readyz: each task counts itself out when it ends.
    let listening = Arc::new(AtomicUsize::new(0));
    for listener in bound {
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
        listening.fetch_add(1, Ordering::Relaxed);
        let (server, stop, listening) = (server.clone(), stop_rx.clone(), listening.clone());
        listeners.push(tokio::spawn(async move {
            server.serve(listener, stop).await;
            listening.fetch_sub(1, Ordering::Relaxed);
        }));
    }

    let alert_active = Arc::new(AtomicBool::new(false));
    let alert = tokio::spawn(alerts::watch_queue(
        alert_settings,
        queue.clone(),
        spool.clone(),
        alert_active.clone(),
        stop_rx.clone(),
    ));
    let admin = match (admin_listen, metrics) {
        (Some(addr), Some(metrics)) => {
            let state = AdminState {
                metrics,
                queue: queue.clone(),
                tracer: tracer.clone(),
                alert_active,
                alert_threshold: cfg.alerts.queue_threshold,
                trace_store: if cfg.trace.enabled {
                    Some(trace::Store::from_config(&cfg).map_err(|e| e.to_string())?)
                } else {
                    None
                },
                auth: Arc::new(admin::auth::Auth::new(admin_password, cfg.admin.tls)),
                config_file: cfg.file.clone(),
                sender_store: sender_store.clone(),
                readiness: Readiness {
                    spool: spool.clone(),
                    listeners: cfg.server.listen.len(),
                    listening,
                },
            };
            Some(start_admin(addr, admin_tls, state, stop_rx.clone()).await?)
        }
        _ => None,
    };

    let reloader = Reloader::new(
        cfg,
        Parts {
            smtp: Some(server.clone()),
            delivery: Some(queue.clone()),
            dsn: Some(dsn_settings),
            lookups: lookups.as_ref().map(socketmap::Services::handle),
        },
    );
    let control = crate::control::start(
        &crate::control::socket_path(&spool_dir),
        crate::control::Targets {
            queue: queue.clone(),
            reloader: reloader.clone(),
        },
        stop_rx.clone(),
    )?;
    signals.until_stopped(&reloader).await;
    // The grace period as last reloaded.
    let cfg = reloader.config().await;
    tracing::info!("shutting down: no new connections");
    let _ = stop_tx.send(true);
    for l in listeners {
        let _ = l.await;
    }
    let _ = alert.await;
    let _ = control.await;
    if let Some(a) = admin {
        // Requests under way get a moment; a client that holds one open does not hold
        // up the shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
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
    // What the writer still holds goes to the store (bounded wait).
    let _ = tokio::task::spawn_blocking(move || tracer.settle(Duration::from_secs(2))).await;
    tracing::info!("stopped; the spool is kept and delivery resumes on restart");
    Ok(())
}

/// Binds `admin.listen` and serves the admin pages until `stop`.
async fn start_admin(
    addr: std::net::SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AdminState,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("admin.listen: {addr}: {e}"))?;
    tracing::info!(admin = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = tls.is_some(), "admin listening (dashboard, /api, /metrics, /healthz, /readyz)");
    let listener = admin::AdminListener::new(listener, tls)
        .map_err(|e| format!("admin.listen: {addr}: {e}"))?;
    let router = admin::router(Arc::new(state));
    Ok(tokio::spawn(admin::serve(listener, router, stop)))
}

/// Opens the spool, waiting up to 30 s while another process holds it: an
/// `srs-relay queue` command working on it while the relay was stopped.
async fn open_spool(dir: &Path) -> Result<(Spool, crate::spool::Recovered), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = false;
    loop {
        match Spool::open(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                if !said {
                    tracing::warn!(dir = %dir.display(),
                        "the spool is locked by another process (an srs-relay queue command?); waiting up to 30 s");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => {
                return other.map_err(|e| format!("spool.dir: {}: {e}", dir.display()));
            }
        }
    }
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

/// The signals a long-running command answers, taken over at its start (before it
/// listens: SIGHUP's default would end the process).
struct Signals {
    term: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        let take = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot handle {name}: {e}"))
        };
        Ok(Signals {
            term: take(SignalKind::terminate(), "SIGTERM")?,
            interrupt: take(SignalKind::interrupt(), "SIGINT")?,
            hangup: take(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Reloads on each SIGHUP (the outcome is logged) until SIGTERM or SIGINT.
    async fn until_stopped(mut self, reloader: &Reloader) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.interrupt.recv() => return,
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    let _ = reloader.reload().await;
                }
            }
        }
    }
}

/// What the process writes as it runs, handed to `server.user` when it switches: the
/// spool, the secrets file, the embedded sender store and the SQLite trace (made here
/// first if new, so that it is the user's from the start).
fn state_paths(cfg: &Config, spool_dir: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let mut paths: Vec<PathBuf> = spool_dir.map(Path::to_path_buf).into_iter().collect();
    // Files only: the spool is the one tree handed over whole.
    let file = |p: PathBuf| (!p.is_dir()).then_some(p);
    paths.extend(file(cfg.secrets_path()));
    if !cfg.admin.listen.trim().is_empty() {
        paths.extend(file(cfg.resolve(&cfg.admin.credentials_file)));
    }
    if !cfg.srs.store.contains("://") {
        paths.extend(file(cfg.resolve(Path::new(&cfg.srs.store))));
    }
    if spool_dir.is_some()
        && cfg.trace.enabled
        && let trace::Store::Sqlite(file) =
            trace::Store::from_config(cfg).map_err(|e| e.to_string())?
    {
        trace::SqliteStore::open(&file).map_err(|e| format!("trace.store: {e}"))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = file.clone().into_os_string();
            name.push(suffix);
            paths.push(PathBuf::from(name));
        }
    }
    Ok(paths)
}
