//! The inbound SMTP server: listeners, connection limits, STARTTLS, graceful shutdown.
//! One task per connection runs a session; a session that asks for STARTTLS hands its
//! socket back, is upgraded here, and runs again over TLS with a fresh state (RFC 3207).

pub mod io;
pub(crate) mod received;
pub mod refusals;
pub(crate) mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
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

/// What every session shares.
pub struct Server {
    pub limits: Limits,
    pub srs: Srs,
    pub policy: Policy,
    pub spool: Arc<Spool>,
    pub store: SenderStore,
    /// `srs.stored_for_relayed`.
    pub stored_for_relayed: bool,
    /// `srs.bounce_senders`.
    pub bounce_senders: BounceSenders,
    /// Refused recipients per client address (`server.max_refused_rcpts`).
    pub refusals: Refusals,
    pub tls: Option<TlsAcceptor>,
    pub on_spooled: OnSpooled,
    /// Where session events go (`[trace]`); disabled unless the caller sets one.
    pub(crate) tracer: crate::trace::Tracer,
    max_connections: Arc<Semaphore>,
    max_connections_total: usize,
    max_per_ip: usize,
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
        Ok(Server {
            limits: Limits::from_config(cfg)?,
            srs,
            policy,
            spool,
            store,
            stored_for_relayed: cfg.srs.stored_for_relayed,
            bounce_senders: cfg.srs.bounce_senders()?,
            refusals: {
                let (limit, window) = cfg.refused_rcpts()?;
                Refusals::new(limit, window)
            },
            tls,
            on_spooled,
            tracer: crate::trace::Tracer::disabled(),
            max_connections: Arc::new(Semaphore::new(cfg.server.max_connections)),
            max_connections_total: cfg.server.max_connections,
            max_per_ip: cfg.server.max_connections_per_ip,
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Records this server's events in `tracer` (off by default).
    pub fn with_tracer(mut self, tracer: crate::trace::Tracer) -> Server {
        self.tracer = tracer;
        self
    }

    /// Sessions open now.
    pub fn active_connections(&self) -> usize {
        self.max_connections_total - self.max_connections.available_permits()
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
        let Ok(_permit) = self.max_connections.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer.ip(), "connection refused: too many connections");
            let _ = stream
                .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
                .await;
            return;
        };
        let Some(_ip_slot) = IpSlot::take(&self, peer.ip()) else {
            tracing::warn!(peer = %peer.ip(), "connection refused: too many connections from this address");
            let _ = stream
                .write_all(b"421 4.7.0 Too many connections from your address, try again later\r\n")
                .await;
            return;
        };
        tracing::info!(peer = %peer, "connection");
        let plain = match session::run(&self, stream, peer, None, shutdown.clone()).await {
            session::End::StartTls(stream) => stream,
            session::End::Closed => return,
        };
        let Some(acceptor) = self.tls.clone() else {
            return;
        };
        match tokio::time::timeout(self.limits.command_timeout, acceptor.accept(plain)).await {
            Ok(Ok(stream)) => {
                let tls = crate::tls::describe(stream.get_ref().1);
                tracing::info!(peer = %peer, tls = %tls, "tls established");
                session::run(&self, stream, peer, Some(tls), shutdown).await;
            }
            Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "tls handshake failed"),
            Err(_) => tracing::warn!(peer = %peer, "tls handshake timed out"),
        }
    }
}

/// A per-IP connection count, given back on drop.
struct IpSlot<'a> {
    server: &'a Server,
    ip: IpAddr,
}

impl<'a> IpSlot<'a> {
    fn take(server: &'a Server, ip: IpAddr) -> Option<IpSlot<'a>> {
        let mut map = server.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= server.max_per_ip {
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
