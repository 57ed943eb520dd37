//! The relay's side: accept, read one request, carry it out, reply.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::protocol::{Reply, Request};
use crate::delivery::QueueHandle;
use crate::reload::Reloader;

/// Longest request line.
const MAX_REQUEST: u64 = 64 * 1024;
/// Time for a client to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests carried out at once; more connections wait to be accepted.
const MAX_AT_ONCE: usize = 8;

/// What requests act on.
#[derive(Clone)]
pub struct Targets {
    pub queue: QueueHandle,
    pub reloader: Reloader,
}

/// Binds the control socket at `path` (mode 0600; a socket left by an earlier run is
/// replaced) and serves it until `stop`; the socket file is removed then.
pub fn start(
    path: &Path,
    targets: Targets,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let listener = crate::accept::bind_unix(path, 0o600)
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), "control socket listening");
    let path: PathBuf = path.to_owned();
    let limit = Arc::new(Semaphore::new(MAX_AT_ONCE));
    Ok(tokio::spawn(async move {
        while let Some(permit) = tokio::select! {
            p = limit.clone().acquire_owned() => p.ok(),
            _ = stop.changed() => None,
        } {
            let Some((stream, _)) = crate::accept::next(&listener, &mut stop, "control").await
            else {
                break;
            };
            let targets = targets.clone();
            tokio::spawn(async move {
                serve(stream, &targets).await;
                drop(permit);
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn serve(stream: UnixStream, targets: &Targets) {
    let by = match stream.peer_cred() {
        Ok(c) => format!(
            "uid {} pid {}",
            c.uid(),
            c.pid().map_or_else(|| "?".into(), |p| p.to_string())
        ),
        Err(_) => "control socket".into(),
    };
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let reply = match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await
    {
        Err(_) => Reply::Error {
            message: "no request in time".into(),
        },
        Ok(Err(e)) => Reply::Error {
            message: e.to_string(),
        },
        Ok(Ok(_)) if line.last() != Some(&b'\n') => Reply::Error {
            message: format!("the request must be one line of at most {MAX_REQUEST} octets"),
        },
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => carry_out(request, targets, &by).await,
            Err(e) => Reply::Error {
                message: format!("bad request: {e}"),
            },
        },
    };
    let mut out = serde_json::to_vec(&reply)
        .unwrap_or_else(|e| format!("{{\"reply\":\"error\",\"message\":\"{e}\"}}").into_bytes());
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}

async fn carry_out(request: Request, targets: &Targets, by: &str) -> Reply {
    let stopped = || Reply::Error {
        message: "the delivery queue is stopping".into(),
    };
    match request {
        Request::List => match targets.queue.list().await {
            Some(entries) => Reply::List { entries },
            None => stopped(),
        },
        Request::Act { action, select } => match targets.queue.act(action, select, by).await {
            Some(results) => Reply::Act { results },
            None => stopped(),
        },
        Request::Reload => {
            tracing::info!(by, "reload asked on the control socket");
            match targets.reloader.reload().await {
                Ok(done) => Reply::Reload {
                    message: done.to_string(),
                },
                Err(message) => Reply::Error { message },
            }
        }
    }
}
