//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`). Each one is a
//! thin door to the code the relay itself runs, for the parts that are not public API;
//! nothing here is a stable interface.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::smtp::Server;
use crate::smtp::io::{DataError, DataReport};
use crate::spool::Envelope;

/// Runs one inbound SMTP session over `stream`, exactly as a connection does. True when it
/// ended by handing the stream back for STARTTLS.
pub async fn smtp_session<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Server,
    stream: S,
    peer: SocketAddr,
    tls: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> bool {
    let settings = server.settings();
    matches!(
        crate::smtp::session::run(server, &settings, stream, peer, tls, shutdown).await,
        crate::smtp::session::End::StartTls(_)
    )
}

/// The DATA reader, into memory.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max_size: u64,
    timeout: Duration,
) -> Result<DataReport, DataError> {
    crate::smtp::io::read_data(r, out, max_size, timeout).await
}

/// The checks spool recovery applies to a queue file (`<id>.q`): its envelope and message,
/// if it keeps it.
pub fn parse_queue_file<'a>(bytes: &'a [u8], id: &str) -> Option<(Envelope, &'a [u8])> {
    crate::spool::split_queue_file(bytes, id)
}

/// The parse spool recovery applies to an updated envelope (`<id>.state`, `version` 2) or
/// to a version 1 `<id>.env` it converts (`version` 1).
pub fn parse_envelope(bytes: &[u8], id: &str, version: u32) -> Option<Envelope> {
    crate::spool::parse_line(bytes, id, version).map(|(env, _)| env)
}

/// The bytes the spool writes for `env`: a queue file with `message`, or with `None` an
/// updated envelope.
pub fn encode_spool_file(env: &Envelope, message: Option<&[u8]>) -> io::Result<Vec<u8>> {
    let mut bytes = crate::spool::encode_line(env, message.map(|m| m.len() as u64))?;
    bytes.extend_from_slice(message.unwrap_or_default());
    Ok(bytes)
}

/// The codec's view of an address: (local part unquoted, domain), if it parses.
pub fn mailbox(address: &str) -> Option<(String, String)> {
    crate::srs::address::parse(address)
        .ok()
        .map(|m| (m.local.into_owned(), m.domain.to_owned()))
}

/// The Postfix lookup services' request handling over `input`: socketmap (netstrings)
/// when `tcp_table` is `None`, else tcp_table for that map. Returns the replies written
/// and whether the connection would be closed.
pub fn lookup_requests(input: &[u8], tcp_table: Option<crate::socketmap::Map>) -> (Vec<u8>, bool) {
    crate::socketmap::answer_all(input, tcp_table)
}
