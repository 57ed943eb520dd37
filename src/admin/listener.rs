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
                let Some(slot) = limits.take(peer.ip()) else {
                    tracing::warn!(peer = %peer, listener = "admin", "connection refused: too many open");
                    drop(stream);
                    continue;
                };
                match &tls {
                    None => {
                        let conn = Limited::new(stream, slot, IDLE_TIMEOUT);
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
                                    let conn = Limited::new(s, slot, IDLE_TIMEOUT);
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
/// the server) when idle for its timeout.
struct Limited<T> {
    inner: T,
    _slot: Slot,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Limited<T> {
    fn new(inner: T, slot: Slot, idle_timeout: Duration) -> Limited<T> {
        Limited {
            inner,
            _slot: slot,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// What `inner` gave: traffic restarts the idle time; waiting past it is an error.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + self.idle_timeout;
                self.idle.as_mut().reset(next);
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
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(cx, polled)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
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

    #[tokio::test]
    async fn a_connection_idle_for_its_timeout_is_closed_and_traffic_keeps_it_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = Limits::new(4, 4);
        let client_ip: IpAddr = "127.0.0.1".parse().unwrap();
        let idle = Duration::from_secs(2);
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Limited::new(server, limits.take(client_ip).unwrap(), idle);
        // Traffic every 100 ms for 3 s: longer than the idle time, never idle for it.
        let writer = tokio::spawn(async move {
            for _ in 0..30 {
                client.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client
        });
        let mut got = 0;
        let mut buf = [0u8; 8];
        while got < 30 {
            got += conn.read(&mut buf).await.unwrap();
        }
        let _client = writer.await.unwrap();
        // Then silence: an error once the idle time is over, and the place is given back.
        let silence = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf));
        let err = silence.await.expect("closed when idle").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(conn);
        assert!(limits.per_client.lock().unwrap().is_empty());
    }
}
