//! Postfix lookup services, a drop-in for postsrsd: the socketmap protocol (postsrsd 2.x;
//! maps `forward` and `reverse` on one socket, TCP or UNIX-domain) and the tcp_table
//! protocol (postsrsd 1.x; one TCP port per map). Postfix asks with
//! `sender_canonical_maps` (forward) and `recipient_canonical_maps` (reverse).
//!
//! Both protocols share one decision ([`lookup::forward`], [`lookup::reverse`]), one
//! connection limit and the same timeouts. Listeners are async tasks; each accepted
//! connection is served by a thread of its own with blocking reads and writes, answering
//! its requests in order, as postsrsd serves each with a process. A lookup is about a
//! microsecond of work between a read and a write, and the client waits for each reply:
//! under 20 concurrent connections an event loop cost twice the CPU per lookup of a
//! blocked reader that the kernel wakes directly (measured, see README's benchmarks).
//! Connections are bounded by `socketmap.max_connections`; Postfix keeps a few per
//! process and reuses them.
//!
//! Malformed or oversized requests are answered (`PERM`, `500`) and the connection closed;
//! idle connections are closed after `socketmap.idle_timeout`, and a started request must
//! arrive whole within `socketmap.request_timeout`, so nothing hangs.
//!
//! `serve` starts the services when configured; `srs-relay socketmap` runs them alone.

pub mod lookup;
pub mod netstring;
pub mod tcp_table;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, ListenAddr, duration};
use crate::sender_store::{SenderStore, entry_lifetime, new_token};
use crate::srs::{Srs, unix_now};
use lookup::{Answer, Rules};

/// Longest socketmap request payload (`<map> <address>`), as postsrsd bounds it. Addresses
/// are at most 256 octets on the wire (RFC 5321); Postfix sends nothing longer here.
pub const MAX_REQUEST: usize = 1024;

/// Per-connection read buffer: a whole request of either protocol fits, with room for
/// a pipelining client's next ones.
const BUFFER: usize = 2 * tcp_table::MAX_LINE;

/// Which table a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// Sender rewriting (`sender_canonical_maps`).
    Forward,
    /// Recipient rewriting (`recipient_canonical_maps`).
    Reverse,
}

impl Map {
    pub fn name(self) -> &'static str {
        match self {
            Map::Forward => "forward",
            Map::Reverse => "reverse",
        }
    }
}

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

/// The running services.
pub struct Services {
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    unix_sockets: Vec<PathBuf>,
}

/// The sender store for lookups, which run on plain threads: each call is run on the
/// runtime the services were started from.
struct BlockingStore {
    store: SenderStore,
    runtime: tokio::runtime::Handle,
    ttl: Duration,
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
struct Shared {
    srs: Srs,
    stored: Box<dyn lookup::Stored + Send + Sync>,
    rules: Rules,
    idle_timeout: Duration,
    request_timeout: Duration,
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

/// What a connection speaks.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Socketmap,
    TcpTable(Map),
}

impl Protocol {
    fn describe(self) -> &'static str {
        match self {
            Protocol::Socketmap => "socketmap",
            Protocol::TcpTable(Map::Forward) => "tcp_table forward",
            Protocol::TcpTable(Map::Reverse) => "tcp_table reverse",
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
    let ttl = entry_lifetime(srs.options().max_age_days);
    let shared = Arc::new(Shared {
        srs,
        stored: Box::new(BlockingStore {
            store,
            runtime: tokio::runtime::Handle::current(),
            ttl,
        }),
        rules: settings.rules,
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
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(&"in use by a running service"));
            }
            std::fs::remove_file(path).map_err(|e| err(&e))?;
        }
        Ok(_) => return Err(err(&"exists and is not a socket")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| err(&e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.socket_mode))
        .map_err(|e| err(&e))?;
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
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "lookup accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
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
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "lookup accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
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

/// What one pass over the buffered input did.
enum Step {
    /// Wait for more input.
    More,
    /// A request of this many octets was answered.
    Answered(usize),
    /// The request was refused as malformed and answered: close the connection.
    Close,
}

/// A blocking stream with the timeouts a connection needs.
trait Blocking: Read + Write {
    fn read_timeout(&self, timeout: Duration) -> std::io::Result<()>;
    fn write_timeout(&self, timeout: Duration) -> std::io::Result<()>;
    fn blocking(&self) -> std::io::Result<()>;
}

impl Blocking for std::net::TcpStream {
    fn read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
    fn write_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(timeout))
    }
    fn blocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)
    }
}

impl Blocking for std::os::unix::net::UnixStream {
    fn read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
    fn write_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(timeout))
    }
    fn blocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)
    }
}

/// Serves one connection: answers every complete request in the buffer (in order, the
/// replies written together), then reads more, until the peer closes, a timeout, a
/// malformed request or shutdown (which shuts the socket down for reading).
fn connection<S: Blocking>(shared: &Shared, mut stream: S, protocol: Protocol) {
    // A zero timeout would mean "none" to the socket: keep at least a millisecond.
    let at_least = |d: Duration| d.max(Duration::from_millis(1));
    if stream.blocking().is_err()
        || stream.read_timeout(at_least(shared.idle_timeout)).is_err()
        || stream
            .write_timeout(at_least(shared.request_timeout))
            .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; BUFFER];
    let mut filled = 0;
    let mut out = Vec::with_capacity(512);
    // When the request in the buffer began to arrive, if one did: it must be whole within
    // request_timeout, however slowly it trickles in.
    let mut started: Option<Instant> = None;
    loop {
        let mut used = 0;
        let mut close = false;
        while used < filled {
            match answer_one(shared, protocol, &buf[used..filled], &mut out) {
                Step::More => break,
                Step::Answered(n) => used += n,
                Step::Close => {
                    close = true;
                    break;
                }
            }
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        // Timeouts change only between idle and a partial request, which Postfix never
        // leaves: the usual lookup costs one read and one write.
        match (filled > 0, started) {
            (false, Some(_)) => {
                started = None;
                if stream.read_timeout(at_least(shared.idle_timeout)).is_err() {
                    return;
                }
            }
            (true, _) => {
                let since = *started.get_or_insert_with(Instant::now);
                let left = shared.request_timeout.saturating_sub(since.elapsed());
                if left.is_zero() || stream.read_timeout(at_least(left)).is_err() {
                    tracing::debug!(protocol = protocol.describe(), "lookup request timed out");
                    return;
                }
            }
            (false, None) => {}
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    tracing::debug!(
                        protocol = protocol.describe(),
                        partial_request = filled > 0,
                        "lookup connection timed out"
                    );
                }
                return;
            }
        }
    }
}

/// Frames, decides and answers the first request in `input`.
fn answer_one(shared: &Shared, protocol: Protocol, input: &[u8], out: &mut Vec<u8>) -> Step {
    match protocol {
        Protocol::Socketmap => match netstring::read_netstring(input, MAX_REQUEST) {
            Ok(None) => Step::More,
            Ok(Some((payload, used))) => {
                // `<map> <key>`: the map name up to the first space.
                let Some(space) = memchr::memchr(b' ', payload) else {
                    refuse(out, protocol, "invalid query: no map name");
                    return Step::Close;
                };
                let key = &payload[space + 1..];
                let answer = match &payload[..space] {
                    b"forward" => lookup(shared, Map::Forward, key),
                    b"reverse" => lookup(shared, Map::Reverse, key),
                    other => {
                        tracing::warn!(map = %String::from_utf8_lossy(other), "unknown socketmap name");
                        Answer::Perm("unknown map: use forward or reverse".into())
                    }
                };
                write_answer(out, protocol, &answer);
                Step::Answered(used)
            }
            Err(e) => {
                refuse(out, protocol, &format!("invalid query: {e}"));
                Step::Close
            }
        },
        Protocol::TcpTable(map) => match tcp_table::read_request(input) {
            Some((_, used)) if used > tcp_table::MAX_LINE => {
                refuse(out, protocol, "request too long");
                Step::Close
            }
            Some((tcp_table::Request::Get(key), used)) => {
                let answer = lookup(shared, map, &key);
                write_answer(out, protocol, &answer);
                Step::Answered(used)
            }
            Some((tcp_table::Request::Invalid(why), _)) => {
                refuse(out, protocol, why);
                Step::Close
            }
            None if input.len() >= tcp_table::MAX_LINE => {
                refuse(out, protocol, "request too long");
                Step::Close
            }
            None => Step::More,
        },
    }
}

/// A protocol violation: answered, logged, and the caller closes the connection.
fn refuse(out: &mut Vec<u8>, protocol: Protocol, why: &str) {
    tracing::warn!(
        protocol = protocol.describe(),
        reason = why,
        "malformed lookup request; closing the connection"
    );
    write_answer(out, protocol, &Answer::Perm(why.to_owned()));
}

/// The decision for one key of one map.
fn lookup(shared: &Shared, map: Map, key: &[u8]) -> Answer {
    // Addresses are UTF-8 (SMTPUTF8) or ASCII; anything else is neither rewritten nor ours.
    let Ok(key) = std::str::from_utf8(key) else {
        return Answer::NotFound("not UTF-8");
    };
    let now = unix_now();
    let answer = match map {
        Map::Forward => lookup::forward(&shared.srs, &shared.rules, key, now, &*shared.stored),
        Map::Reverse => lookup::reverse(&shared.srs, &shared.rules, key, now, &*shared.stored),
    };
    match &answer {
        Answer::Refused(reason) => {
            tracing::info!(map = map.name(), address = key, reason = %reason, "refused")
        }
        Answer::Perm(reason) => {
            tracing::warn!(map = map.name(), address = key, reason = %reason, "bad request")
        }
        Answer::Temp(reason) => {
            tracing::warn!(map = map.name(), address = key, reason = %reason, "lookup failed")
        }
        Answer::Found(rewritten) => {
            tracing::debug!(map = map.name(), address = key, rewritten = %rewritten, "rewritten")
        }
        Answer::NotFound(why) => {
            tracing::debug!(
                map = map.name(),
                address = key,
                reason = why,
                "not rewritten"
            )
        }
    }
    answer
}

/// Encodes `answer` in the connection's protocol.
fn write_answer(out: &mut Vec<u8>, protocol: Protocol, answer: &Answer) {
    match protocol {
        Protocol::Socketmap => {
            let (status, text): (&[u8], &[u8]) = match answer {
                Answer::Found(address) => (b"OK ", address.as_bytes()),
                // Postfix wants nothing after NOTFOUND; the reason is in the log.
                Answer::NotFound(_) | Answer::Refused(_) => (b"NOTFOUND ", b""),
                Answer::Temp(reason) => (b"TEMP ", reason.as_bytes()),
                Answer::Perm(reason) => (b"PERM ", reason.as_bytes()),
            };
            netstring::write_netstring_parts(out, &[status, text]);
        }
        Protocol::TcpTable(_) => tcp_table::write_reply(out, answer),
    }
}

/// A user name or numeric uid.
fn user_id(key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| ConfigError::key(key, "NUL in name"))?;
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `entry`.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(ConfigError::key(key, format!("no such user {name:?}")));
    }
    Ok(entry.pw_uid)
}

/// A group name or numeric gid.
fn group_id(key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| ConfigError::key(key, "NUL in name"))?;
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `entry`.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(ConfigError::key(key, format!("no such group {name:?}")));
    }
    Ok(entry.gr_gid)
}

/// For the fuzz target: answers every request in `input` as a connection does (no
/// socket, no sender store), until it needs more input or refuses and closes. Returns
/// what would be written, and whether the connection would be closed.
#[cfg(feature = "fuzzing")]
pub(crate) fn answer_all(input: &[u8], tcp_table: Option<Map>) -> (Vec<u8>, bool) {
    use std::sync::OnceLock;

    struct NoStore;
    impl lookup::Stored for NoStore {
        fn get(&self, _: &str) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn put(&self, _: &str) -> Result<String, String> {
            Err("no sender store here".into())
        }
    }

    static SHARED: OnceLock<Shared> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        let options = crate::srs::Options {
            format: crate::srs::Format::Classic,
            local_domains: vec!["forward.example".into()],
            ..Default::default()
        };
        Shared {
            srs: Srs::new(&["fuzz secret"], options).expect("valid options"),
            stored: Box::new(NoStore),
            rules: Rules {
                domain: "forward.example".into(),
                exclude_domains: vec![".partner.example".into()],
            },
            idle_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            connections: Arc::new(Semaphore::new(1)),
            max_connections: 1,
            open: Mutex::new(Open::default()),
        }
    });
    let protocol = match tcp_table {
        Some(map) => Protocol::TcpTable(map),
        None => Protocol::Socketmap,
    };
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        match answer_one(shared, protocol, &input[at..], &mut out) {
            Step::More => return (out, false),
            Step::Answered(n) => {
                assert!(n > 0, "a request of no octets would loop");
                at += n;
            }
            Step::Close => return (out, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No stored senders in these tests (lookup.rs tests the stored form).
    struct NoStore;

    impl lookup::Stored for NoStore {
        fn get(&self, _: &str) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn put(&self, _: &str) -> Result<String, String> {
            Err("no store in this test".into())
        }
    }

    fn shared() -> Shared {
        let options = crate::srs::Options {
            format: crate::srs::Format::Classic,
            ..Default::default()
        };
        Shared {
            srs: Srs::new(&["tops3cr3t"], options).unwrap(),
            stored: Box::new(NoStore),
            rules: Rules {
                domain: "example.com".into(),
                exclude_domains: vec![],
            },
            idle_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            connections: Arc::new(Semaphore::new(1)),
            max_connections: 1,
            open: Mutex::new(Open::default()),
        }
    }

    fn socketmap(input: &[u8]) -> (String, Vec<usize>, bool) {
        let s = shared();
        let mut out = Vec::new();
        let mut used = Vec::new();
        let mut at = 0;
        loop {
            match answer_one(&s, Protocol::Socketmap, &input[at..], &mut out) {
                Step::More => return (String::from_utf8(out).unwrap(), used, false),
                Step::Answered(n) => {
                    used.push(n);
                    at += n;
                }
                Step::Close => return (String::from_utf8(out).unwrap(), used, true),
            }
        }
    }

    fn netstrings(payloads: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            netstring::write_netstring(&mut out, p.as_bytes());
        }
        out
    }

    #[test]
    fn socketmap_requests_and_replies() {
        let input = netstrings(&[
            "reverse bob@otherdomain.com",
            "forward postmaster",
            "lookup bob@x.org",
        ]);
        let (out, used, closed) = socketmap(&input);
        assert_eq!(
            out,
            "9:NOTFOUND ,9:NOTFOUND ,40:PERM unknown map: use forward or reverse,"
        );
        assert_eq!((used, closed), (vec![31, 22, 20], false));
        let (out, _, _) = socketmap(&netstrings(&["forward test@otherdomain.com"]));
        assert!(out.starts_with("48:OK SRS0="), "{out}");
        assert!(out.ends_with("=otherdomain.com=test@example.com,"), "{out}");
    }

    #[test]
    fn socketmap_refuses_malformed_input_and_closes() {
        for input in [
            &b"x:abc,"[..],
            b"5:abcdef,",
            b"7:forward,",
            b"99999:",
            b"01:a,",
        ] {
            let (out, used, closed) = socketmap(input);
            assert!(closed, "{input:?}");
            assert!(used.is_empty(), "{input:?}");
            assert!(out.contains(":PERM invalid query"), "{input:?}: {out}");
        }
        let (out, _, closed) = socketmap(b"1025:");
        assert!(closed);
        assert!(out.contains("longer than 1024"), "{out}");
        // An incomplete request waits for more.
        assert_eq!(
            socketmap(b"28:forward test@"),
            (String::new(), vec![], false)
        );
    }

    #[test]
    fn tcp_table_requests_and_replies() {
        let s = shared();
        let mut out = Vec::new();
        let forward = Protocol::TcpTable(Map::Forward);
        let Step::Answered(n) = answer_one(&s, forward, b"get test%40otherdomain.com\n", &mut out)
        else {
            panic!()
        };
        assert_eq!(n, 27);
        let reply = String::from_utf8(std::mem::take(&mut out)).unwrap();
        assert!(reply.starts_with("200 SRS0="), "{reply}");
        assert!(matches!(
            answer_one(&s, forward, b"get bob@example.com", &mut out),
            Step::More
        ));
        assert!(matches!(
            answer_one(&s, forward, b"GET x\n", &mut out),
            Step::Close
        ));
        assert_eq!(out, b"500 invalid request\n");
        out.clear();
        let long = vec![b'a'; tcp_table::MAX_LINE];
        assert!(matches!(
            answer_one(&s, forward, &long, &mut out),
            Step::Close
        ));
        assert_eq!(out, b"500 request too long\n");
    }
}
