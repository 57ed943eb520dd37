//! The accept loop every listener shares: the next connection, or none once shut down.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// A listening socket.
pub(crate) trait Listener {
    type Stream;
    type Addr;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Addr)>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Addr)>> + Send {
        TcpListener::accept(self)
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Addr)>> + Send {
        UnixListener::accept(self)
    }
}

/// The next connection on `listener`, or `None` once `shutdown` changes. Accept errors
/// (EMFILE and friends) are logged as `what` and retried after 50 ms instead of spinning.
pub(crate) async fn next<L: Listener>(
    listener: &L,
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<(L::Stream, L::Addr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}
