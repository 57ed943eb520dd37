//! The inbound SMTP server: listeners, connection limits, STARTTLS, graceful shutdown.
//! One task per connection runs a session; a session that asks for STARTTLS hands its
//! socket back, is upgraded here, and runs again over TLS with a fresh state (RFC 3207).
//! A reload replaces the [`Settings`]; each connection keeps the ones it started with.

pub mod io;
pub(crate) mod received;
pub mod refusals;
pub(crate) mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{BounceSenders, Config, ConfigError, duration};
use crate::policy::Policy;
use crate::sender_store::SenderStore;
use crate::spool::{Envelope, Spool};
use crate::srs::Srs;
use refusals::Refusals;

/// Limits and names a session needs, read once from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub max_errors: usize,
    pub max_received_headers: usize,
    pub require_tls: bool,
    /// Domain of relayed mail's SRS addresses.
    pub default_domain: String,
}

impl Limits {
    pub fn from_config(cfg: &Config) -> Result<Limits, ConfigError> {
        Ok(Limits {
            hostname: cfg.server.hostname.clone(),
            max_message_size: cfg.server.max_message_size,
            max_recipients: cfg.server.max_recipients,
            max_line_length: cfg.server.max_line_length,
            command_timeout: duration("server.command_timeout", &cfg.server.command_timeout)?,
            data_timeout: duration("server.data_timeout", &cfg.server.data_timeout)?,
            max_errors: cfg.server.max_errors,
            max_received_headers: cfg.relay.max_received_headers,
            require_tls: cfg.tls.require,
            default_domain: cfg
                .srs
                .default_domain
                .clone()
                .unwrap_or_else(|| cfg.server.hostname.clone()),
        })
    }
}

/// Called with each envelope once it is durably in the spool (wired to the delivery queue).
pub type OnSpooled = Arc<dyn Fn(Envelope) + Send + Sync>;

/// What sessions work with from the configuration. A reload replaces it whole; each
/// connection keeps the one it started with to its end (after STARTTLS too).
pub struct Settings {
    pub limits: Limits,
    pub srs: Srs,
    pub policy: Policy,
    /// `srs.stored_for_relayed`.
    pub stored_for_relayed: bool,
    /// `srs.bounce_senders`.
    pub bounce_senders: BounceSenders,
    /// STARTTLS, offered when set.
    pub tls: Option<TlsAcceptor>,
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `server.max_connections_per_ip`.
    pub max_per_ip: usize,
    /// `server.max_refused_rcpts` and `server.refused_rcpts_window`.
    pub refused_rcpts: (u32, Duration),
    /// `[auth]` and `[arc]`: checks on arrival and the ARC seal; `None`: off.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
}

impl Settings {
    /// The settings `cfg` describes, with the codec, policy and TLS acceptor made from it.
    pub fn new(
        cfg: &Config,
        srs: Srs,
        policy: Policy,
        tls: Option<TlsAcceptor>,
    ) -> Result<Settings, ConfigError> {
        Ok(Settings {
            limits: Limits::from_config(cfg)?,
            srs,
            policy,
            stored_for_relayed: cfg.srs.stored_for_relayed,
            bounce_senders: cfg.srs.bounce_senders()?,
            tls,
            max_connections: cfg.server.max_connections,
            max_per_ip: cfg.server.max_connections_per_ip,
            refused_rcpts: cfg.refused_rcpts()?,
            auth: crate::auth::Authenticator::from_config(cfg)?.map(Arc::new),
        })
    }
}

/// What every session shares: the settings in force, and what lives across reloads.
pub struct Server {
    settings: ArcSwap<Settings>,
    pub spool: Arc<Spool>,
    pub store: SenderStore,
    /// Refused recipients per client address (`server.max_refused_rcpts`).
    pub refusals: Refusals,
    pub on_spooled: OnSpooled,
    /// Where session events go (`[trace]`); disabled unless the caller sets one.
    pub(crate) tracer: crate::trace::Tracer,
    /// Sessions open now.
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Server {
    pub fn new(
        cfg: &Config,
        srs: Srs,
        policy: Policy,
        spool: Arc<Spool>,
        store: SenderStore,
        tls: Option<TlsAcceptor>,
        on_spooled: OnSpooled,
    ) -> Result<Server, ConfigError> {
        let settings = Settings::new(cfg, srs, policy, tls)?;
        let (limit, window) = settings.refused_rcpts;
        Ok(Server {
            settings: ArcSwap::from_pointee(settings),
            spool,
            store,
            refusals: Refusals::new(limit, window),
            on_spooled,
            tracer: crate::trace::Tracer::disabled(),
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Records this server's events in `tracer` (off by default).
    pub fn with_tracer(mut self, tracer: crate::trace::Tracer) -> Server {
        self.tracer = tracer;
        self
    }

    /// The settings in force: what a connection starting now gets.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Puts `settings` in force for the connections that start from now on; those open
    /// keep theirs. The refused-recipient counts stay, under the new limit and window.
    pub fn reload(&self, settings: Settings) {
        let (limit, window) = settings.refused_rcpts;
        self.refusals.set_limits(limit, window);
        self.settings.store(Arc::new(settings));
    }

    /// Sessions open now.
    pub fn active_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Accepts connections on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        while let Some((stream, peer)) = crate::accept::next(&listener, &mut shutdown, "smtp").await
        {
            let server = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { server.connection(stream, peer, shutdown).await });
        }
    }

    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        // An address that guessed too much waits out its penalty (trusted networks are
        // never counted, so never here).
        if let Some(count) = self.refusals.blocked(peer.ip()) {
            tracing::info!(peer = %peer.ip(), refused = count, "connection refused: too many refused recipients");
            let _ = stream
                .write_all(format!("{}\r\n", refusals::TOO_MANY).as_bytes())
                .await;
            return;
        }
        // This connection's settings, to its end, whatever a reload does meanwhile.
        let settings = self.settings();
        let Some(_slot) = Slot::take(&self.open, settings.max_connections) else {
            tracing::warn!(peer = %peer.ip(), "connection refused: too many connections");
            let _ = stream
                .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
                .await;
            return;
        };
        let Some(_ip_slot) = IpSlot::take(&self, peer.ip(), settings.max_per_ip) else {
            tracing::warn!(peer = %peer.ip(), "connection refused: too many connections from this address");
            let _ = stream
                .write_all(b"421 4.7.0 Too many connections from your address, try again later\r\n")
                .await;
            return;
        };
        tracing::info!(peer = %peer, "connection");
        let plain = match session::run(&self, &settings, stream, peer, None, shutdown.clone()).await
        {
            session::End::StartTls(stream) => stream,
            session::End::Closed => return,
        };
        let Some(acceptor) = settings.tls.clone() else {
            return;
        };
        match tokio::time::timeout(settings.limits.command_timeout, acceptor.accept(plain)).await {
            Ok(Ok(stream)) => {
                let tls = crate::tls::describe(stream.get_ref().1);
                tracing::info!(peer = %peer, tls = %tls, "tls established");
                session::run(&self, &settings, stream, peer, Some(tls), shutdown).await;
            }
            Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "tls handshake failed"),
            Err(_) => tracing::warn!(peer = %peer, "tls handshake timed out"),
        }
    }
}

/// One of the open sessions counted against `server.max_connections`, given back on drop.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(open: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        if open.fetch_add(1, Ordering::AcqRel) >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(open))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A per-IP connection count, given back on drop.
struct IpSlot<'a> {
    server: &'a Server,
    ip: IpAddr,
}

impl<'a> IpSlot<'a> {
    fn take(server: &'a Server, ip: IpAddr, max: usize) -> Option<IpSlot<'a>> {
        let mut map = server.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { server, ip })
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.server.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
