//! The accept loop every listener shares: the next connection, or none once shut down.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
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

/// Binds a UNIX-domain socket at `path` with `mode`. A socket file left by an earlier run
/// is replaced; one that still answers belongs to a running service and anything that is
/// not a socket is never removed.
pub(crate) fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err("in use by a running service".into());
            }
            std::fs::remove_file(path).map_err(|e| e.to_string())?;
        }
        Ok(_) => return Err("exists and is not a socket".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    let listener = UnixListener::bind(path).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| e.to_string())?;
    Ok(listener)
}
