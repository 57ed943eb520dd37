//! The admin listener's connections, plain or TLS (`admin.tls`, with the certificate
//! settings of SMTP). TLS handshakes run on tasks of their own, with a time limit, so a
//! client that stalls one holds up nobody else.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Time for a client to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const BACKLOG: usize = 64;

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
                match &tls {
                    None => {
                        if tx.send((Box::new(stream), peer)).await.is_err() {
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
                                    let _ = tx.send((Box::new(s), peer)).await;
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
