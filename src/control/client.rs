//! The client side, for the CLI: blocking, one request, one reply.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Reply, Request};

/// Why a request got no reply.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens at the socket: the relay is not running (or runs with another
    /// spool).
    NotRunning,
    /// Anything else, in a sentence.
    Failed(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning => f.write_str("the relay is not running"),
            ClientError::Failed(why) => f.write_str(why),
        }
    }
}

/// Sends `request` to the control socket at `path` and waits up to `timeout` for the
/// reply.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let failed =
        |e: io::Error| ClientError::Failed(format!("control socket {}: {e}", path.display()));
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning);
        }
        Err(e) => return Err(failed(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    let mut line = serde_json::to_vec(request).map_err(|e| failed(io::Error::other(e)))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(failed)?;
    let mut reply = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut reply)
        .map_err(failed)?;
    if reply.is_empty() {
        return Err(ClientError::Failed(format!(
            "control socket {}: closed without a reply",
            path.display()
        )));
    }
    serde_json::from_slice(&reply).map_err(|e| {
        ClientError::Failed(format!("control socket {}: bad reply: {e}", path.display()))
    })
}
