//! The admin listener's connections, plain or TLS (`admin.tls`, with the certificate
//! settings of SMTP). TLS handshakes run on tasks of their own, with a time limit, so a
//! client that stalls one holds up nobody else. Connections are limited in all and per
//! client address, handshakes included, and one that sees no traffic either way for
//! [`IDLE_TIMEOUT`] is closed: a client that opens connections and holds them (or waits
//! out wrong passwords on many) cannot lock others out or grow the relay's memory.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

/// Time for a client to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const BACKLOG: usize = 64;
/// Open admin connections at most, handshaking ones included.
const MAX_CONNECTIONS: usize = 256;
/// Open admin connections from one client address at most (a browser opens about six).
const MAX_PER_CLIENT: usize = 16;
/// A connection with nothing read or written for this long is closed (the dashboard's
/// page asks every 30 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A connection is closed after this long whatever its traffic: a client that trickles a
/// byte now and then holds no place for ever (a browser opens a new one).
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// A connection, plain or TLS.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// The client's address, for handlers (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Connections accepted (and handshaken) by a task of their own.
pub struct AdminListener {
    ready: mpsc::Receiver<(Box<dyn Conn>, SocketAddr)>,
    local: SocketAddr,
}

impl AdminListener {
    /// Takes connections from `tcp`, through `tls` when given.
    pub fn new(tcp: TcpListener, tls: Option<TlsAcceptor>) -> std::io::Result<AdminListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel::<(Box<dyn Conn>, SocketAddr)>(BACKLOG);
        let limits = Limits::new(MAX_CONNECTIONS, MAX_PER_CLIENT);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, listener = "admin", "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = limits.take(client_of(peer.ip())) else {
                    tracing::warn!(peer = %peer, listener = "admin", "connection refused: too many open");
                    drop(stream);
                    continue;
                };
                match &tls {
                    None => {
                        let conn = Limited::new(stream, slot, IDLE_TIMEOUT, MAX_LIFETIME);
                        if tx.send((Box::new(conn), peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => {
                                    let conn = Limited::new(s, slot, IDLE_TIMEOUT, MAX_LIFETIME);
                                    let _ = tx.send((Box::new(conn), peer)).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %peer, error = %e, "admin TLS handshake failed")
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %peer, "admin TLS handshake timed out")
                                }
                            }
                        });
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(AdminListener { ready, local })
    }
}

/// Who a connection counts against: its IPv4 address, or the /64 of its IPv6 address
/// (one host's share of a network).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

/// The open connections, in all and per client address.
#[derive(Clone)]
struct Limits {
    all: Arc<Semaphore>,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_client: usize,
}

/// One open connection's place within [`Limits`], given back when it is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    client: IpAddr,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Limits {
    fn new(max: usize, max_per_client: usize) -> Limits {
        Limits {
            all: Arc::new(Semaphore::new(max)),
            per_client: Arc::default(),
            max_per_client,
        }
    }

    /// A place for a connection from `client`, if there is one.
    fn take(&self, client: IpAddr) -> Option<Slot> {
        let permit = self.all.clone().try_acquire_owned().ok()?;
        let mut open = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.max_per_client {
            return None;
        }
        *n += 1;
        Some(Slot {
            _permit: permit,
            client,
            per_client: self.per_client.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// A connection holding its [`Slot`] for as long as it is open, and closed (an error to
/// the server) when idle for its timeout or at the end of its lifetime. Every poll is
/// watched, flush and shutdown too: TLS may wait in them for a client that reads nothing.
struct Limited<T> {
    inner: T,
    _slot: Slot,
    idle_timeout: Duration,
    end_of_life: tokio::time::Instant,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Limited<T> {
    fn new(inner: T, slot: Slot, idle_timeout: Duration, lifetime: Duration) -> Limited<T> {
        let now = tokio::time::Instant::now();
        let end_of_life = now + lifetime;
        Limited {
            inner,
            _slot: slot,
            idle_timeout,
            end_of_life,
            idle: Box::pin(tokio::time::sleep_until(
                (now + idle_timeout).min(end_of_life),
            )),
        }
    }

    /// What `inner` gave: traffic (`moved`: octets read or written) restarts the idle
    /// time, up to the end of life; waiting past it is an error.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
        moved: impl FnOnce(&R) -> bool,
    ) -> Poll<std::io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                if r.as_ref().is_ok_and(moved) {
                    let next = tokio::time::Instant::now() + self.idle_timeout;
                    self.idle.as_mut().reset(next.min(self.end_of_life));
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "admin connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() > before;
        self.watch(cx, polled, |()| read)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled, |n| *n > 0)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled, |()| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled, |()| false)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Listener for AdminListener {
    type Io = Box<dyn Conn>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task is gone: no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, AdminListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, AdminListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_in_all_and_per_client_and_given_back() {
        let limits = Limits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        let a1 = limits.take(a).unwrap();
        let a2 = limits.take(a).unwrap();
        assert!(limits.take(a).is_none(), "a third from one client");
        let b1 = limits.take(b).unwrap();
        assert!(limits.take(b).is_none(), "a fourth in all");
        drop(a1);
        assert!(limits.take(a).is_some_and(|s| {
            drop(s);
            true
        }));
        drop((a2, b1));
        assert!(limits.per_client.lock().unwrap().is_empty());
        let again: Vec<Slot> = (0..2).map(|_| limits.take(b).unwrap()).collect();
        assert_eq!(again.len(), 2);
    }

    /// Bytes `1` every 100 ms (of tokio's paused time) into `client`, `n` times.
    fn trickle(
        mut client: tokio::io::DuplexStream,
        n: usize,
    ) -> tokio::task::JoinHandle<tokio::io::DuplexStream> {
        use tokio::io::AsyncWriteExt;
        tokio::spawn(async move {
            for _ in 0..n {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_for_its_timeout_is_closed_and_traffic_keeps_it_open() {
        use tokio::io::AsyncReadExt;
        let limits = Limits::new(4, 4);
        let client_ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (client, server) = tokio::io::duplex(64);
        let slot = limits.take(client_ip).unwrap();
        let mut conn = Limited::new(
            server,
            slot,
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        // Traffic for 3 s: longer than the idle time, never idle for it.
        let writer = trickle(client, 30);
        let mut got = 0;
        let mut buf = [0u8; 8];
        while got < 30 {
            got += conn.read(&mut buf).await.unwrap();
        }
        let _client = writer.await.unwrap();
        // Then silence: an error once the idle time is over, and the place is given back.
        let silent_from = tokio::time::Instant::now();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let silent = silent_from.elapsed();
        assert!(
            silent >= Duration::from_millis(1800) && silent <= Duration::from_secs(2),
            "{silent:?}"
        );
        drop(conn);
        assert!(limits.per_client.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_does_not_keep_a_connection_past_its_lifetime() {
        use tokio::io::AsyncReadExt;
        let limits = Limits::new(4, 4);
        let (client, server) = tokio::io::duplex(64);
        let slot = limits.take("::1".parse().unwrap()).unwrap();
        let started = tokio::time::Instant::now();
        let mut conn = Limited::new(server, slot, Duration::from_secs(2), Duration::from_secs(5));
        let _writer = trickle(client, 100);
        let mut buf = [0u8; 8];
        let err = loop {
            match conn.read(&mut buf).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let lived = started.elapsed();
        assert!(
            lived >= Duration::from_secs(5) && lived < Duration::from_secs(6),
            "{lived:?}"
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_of(v4), v4);
    }
}
