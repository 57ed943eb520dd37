//! The lookup services' lifecycle: binding the listeners, accepting and admitting
//! connections onto threads of their own, and closing them all at shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::connection::connection;
use super::dispatch::{Lookups, Protocol, write_answer};
use super::lookup::{self, Answer, Map};
use super::settings::Settings;
use crate::config::ListenAddr;
use crate::sender_store::{SenderStore, entry_lifetime, new_token};
use crate::srs::Srs;

/// The running services.
pub struct Services {
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    unix_sockets: Vec<PathBuf>,
}

/// Reloads running services: see [`Services::handle`].
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

impl Handle {
    /// Answers every request read from now on with `srs` and the rules of `settings`
    /// (`srs.default_domain`, `socketmap.exclude_domains`), open connections included.
    /// Listeners, timeouts and the connection limit keep their start values.
    pub fn reload(&self, settings: &Settings, srs: Srs) {
        self.0.lookups.store(Arc::new(Lookups {
            stored: Arc::new(BlockingStore::new(self.0.store.clone(), &srs)),
            srs,
            rules: settings.rules.clone(),
        }));
    }
}

/// The sender store for lookups, which run on plain threads: each call is run on the
/// runtime the services were started from.
struct BlockingStore {
    store: SenderStore,
    runtime: tokio::runtime::Handle,
    ttl: Duration,
}

impl BlockingStore {
    /// Called on the runtime: keeps entries as long as `srs` accepts addresses.
    fn new(store: SenderStore, srs: &Srs) -> BlockingStore {
        BlockingStore {
            store,
            runtime: tokio::runtime::Handle::current(),
            ttl: entry_lifetime(srs.options().max_age_days),
        }
    }
}

impl lookup::Stored for BlockingStore {
    fn get(&self, token: &str) -> Result<Option<String>, String> {
        self.runtime
            .block_on(self.store.get(token))
            .map_err(|e| e.to_string())
    }

    fn put(&self, sender: &str) -> Result<String, String> {
        let token = new_token().map_err(|e| e.to_string())?;
        self.runtime
            .block_on(self.store.put(&token, sender, self.ttl))
            .map_err(|e| e.to_string())?;
        Ok(token)
    }
}

/// What every lookup connection shares.
pub(super) struct Shared {
    /// Replaced whole by a reload; each batch of requests reads it once.
    pub(super) lookups: ArcSwap<Lookups>,
    /// The sender store, for the lookups a reload makes.
    store: SenderStore,
    pub(super) idle_timeout: Duration,
    pub(super) request_timeout: Duration,
    connections: Arc<Semaphore>,
    max_connections: usize,
    open: Mutex<Open>,
}

/// The sockets of open connections. A connection's thread blocks in `read`; shutting its
/// socket down for reading is how shutdown wakes it (a reply under way is still sent).
#[derive(Default)]
struct Open {
    stopping: bool,
    next_id: u64,
    sockets: HashMap<u64, Socket>,
}

/// A connection's socket, blocking once its thread has it.
enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Socket {
    fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Read),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Read),
        };
    }
}

impl Shared {
    /// Records an open connection; `None` once shutdown began.
    fn register(&self, socket: &Socket) -> Option<u64> {
        let clone = socket.try_clone().ok()?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.stopping {
            return None;
        }
        open.next_id += 1;
        let id = open.next_id;
        open.sockets.insert(id, clone);
        Some(id)
    }

    fn unregister(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.sockets.remove(&id);
    }

    /// Refuses new connections and wakes every open one, which then ends.
    fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.stopping = true;
        for socket in open.sockets.values() {
            socket.shutdown();
        }
    }
}

/// Binds every configured listener (all or none: the first failure is returned), then
/// accepts connections until `shutdown` turns true; [`Services::stopped`] then ends them.
pub async fn start(
    settings: Settings,
    srs: Srs,
    store: SenderStore,
    shutdown: watch::Receiver<bool>,
) -> Result<Services, String> {
    let mut tcp = Vec::new();
    let mut unix = Vec::new();
    for addr in &settings.socketmap {
        match addr {
            ListenAddr::Tcp(a) => {
                tcp.push((bind_tcp("socketmap.listen", *a).await?, Protocol::Socketmap))
            }
            ListenAddr::Unix(path) => unix.push((bind_unix(path, &settings)?, path.clone())),
        }
    }
    for (key, addrs, map) in [
        (
            "tcp_table.forward_listen",
            &settings.tcp_forward,
            Map::Forward,
        ),
        (
            "tcp_table.reverse_listen",
            &settings.tcp_reverse,
            Map::Reverse,
        ),
    ] {
        for a in addrs {
            tcp.push((bind_tcp(key, *a).await?, Protocol::TcpTable(map)));
        }
    }
    let shared = Arc::new(Shared {
        lookups: ArcSwap::from_pointee(Lookups {
            stored: Arc::new(BlockingStore::new(store.clone(), &srs)),
            srs,
            rules: settings.rules,
        }),
        store,
        idle_timeout: settings.idle_timeout,
        request_timeout: settings.request_timeout,
        connections: Arc::new(Semaphore::new(settings.max_connections)),
        max_connections: settings.max_connections,
        open: Mutex::new(Open::default()),
    });
    let mut tasks = Vec::new();
    for (listener, protocol) in tcp {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %addr, protocol = protocol.describe(), "lookup service listening");
        tasks.push(tokio::spawn(accept_tcp(
            listener,
            protocol,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    let mut unix_sockets = Vec::new();
    for (listener, path) in unix {
        tracing::info!(listen = %format!("unix:{}", path.display()), protocol = "socketmap", "lookup service listening");
        tasks.push(tokio::spawn(accept_unix(
            listener,
            shared.clone(),
            shutdown.clone(),
        )));
        unix_sockets.push(path);
    }
    Ok(Services {
        tasks,
        shared,
        unix_sockets,
    })
}

impl Services {
    /// What reloads these services while they run (a clone lives past [`Services::stopped`]).
    pub fn handle(&self) -> Handle {
        Handle(self.shared.clone())
    }

    /// Lookup connections open now.
    pub fn active_connections(&self) -> usize {
        self.shared.max_connections - self.shared.connections.available_permits()
    }

    /// Waits for the listeners to stop, closes the open connections (a request being
    /// answered is answered first) and waits for them to end, then removes the UNIX
    /// sockets.
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.shared.close_all();
        let all = u32::try_from(self.shared.max_connections).unwrap_or(u32::MAX);
        let closed = tokio::time::timeout(
            Duration::from_secs(5),
            self.shared.connections.clone().acquire_many_owned(all),
        )
        .await;
        if closed.is_err() {
            tracing::warn!(
                open = self.shared.max_connections - self.shared.connections.available_permits(),
                "lookup connections still open at shutdown"
            );
        }
        for path in self.unix_sockets {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn bind_tcp(key: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{key}: {addr}: {e}"))
}

/// Binds a UNIX-domain socket with the configured mode and owner. A socket file left by
/// an earlier run is replaced; one that still answers belongs to a running service and
/// anything that is not a socket is never removed.
fn bind_unix(path: &Path, settings: &Settings) -> Result<UnixListener, String> {
    let err = |e: &dyn std::fmt::Display| format!("socketmap.listen: unix:{}: {e}", path.display());
    let listener = crate::accept::bind_unix(path, settings.socket_mode).map_err(|e| err(&e))?;
    if settings.socket_owner.is_some() || settings.socket_group.is_some() {
        std::os::unix::fs::chown(path, settings.socket_owner, settings.socket_group)
            .map_err(|e| err(&format!("chown: {e}")))?;
    }
    Ok(listener)
}

async fn accept_tcp(
    listener: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some((stream, peer)) = crate::accept::next(&listener, &mut shutdown, "lookup").await {
        let Some(permit) = admit(&shared, protocol, |b| stream.try_write(b)) else {
            tracing::warn!(peer = %peer, "lookup connection refused: too many connections");
            continue;
        };
        // Replies are small and awaited one by one: send each at once.
        let _ = stream.set_nodelay(true);
        tracing::debug!(peer = %peer, protocol = protocol.describe(), "lookup connection");
        match stream.into_std() {
            Ok(s) => spawn_connection(&shared, Socket::Tcp(s), protocol, permit),
            Err(e) => tracing::warn!(error = %e, "lookup connection lost"),
        }
    }
}

async fn accept_unix(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some((stream, _)) = crate::accept::next(&listener, &mut shutdown, "lookup").await {
        let Some(permit) = admit(&shared, Protocol::Socketmap, |b| stream.try_write(b)) else {
            tracing::warn!("lookup connection refused: too many connections");
            continue;
        };
        match stream.into_std() {
            Ok(s) => spawn_connection(&shared, Socket::Unix(s), Protocol::Socketmap, permit),
            Err(e) => tracing::warn!(error = %e, "lookup connection lost"),
        }
    }
}

/// Serves a connection on a thread of its own, holding `permit` until it ends.
fn spawn_connection(
    shared: &Arc<Shared>,
    socket: Socket,
    protocol: Protocol,
    permit: OwnedSemaphorePermit,
) {
    let Some(id) = shared.register(&socket) else {
        tracing::debug!("lookup connection dropped: shutting down, or out of descriptors");
        return;
    };
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("lookup".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _permit = permit;
            match socket {
                Socket::Tcp(s) => connection(&shared, s, protocol),
                Socket::Unix(s) => connection(&shared, s, protocol),
            }
            shared.unregister(id);
        });
    if let Err(e) = spawned {
        // The closure (socket, permit, registration) was dropped with the error.
        tracing::warn!(error = %e, "lookup connection refused: cannot start a thread");
    }
}

/// A connection slot, or (over `socketmap.max_connections`) a "try again later" written
/// without waiting, and the connection dropped. Postfix reads it as its lookup's answer.
fn admit(
    shared: &Shared,
    protocol: Protocol,
    try_write: impl FnOnce(&[u8]) -> std::io::Result<usize>,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = shared.connections.clone().try_acquire_owned() {
        return Some(permit);
    }
    let mut reply = Vec::new();
    write_answer(
        &mut reply,
        protocol,
        &Answer::Temp("too many connections, try again later".into()),
    );
    let _ = try_write(&reply);
    None
}
