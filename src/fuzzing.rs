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
    matches!(
        crate::smtp::session::run(server, stream, peer, tls, shutdown).await,
        crate::smtp::session::End::StartTls(_)
    )
}

/// The DATA reader with its long-line cap lowered to `line_cap`.
pub async fn read_data_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max_size: usize,
    timeout: Duration,
    line_cap: usize,
) -> Result<DataReport, DataError> {
    crate::smtp::io::read_data_capped(r, out, max_size, timeout, line_cap).await
}

/// The parse that spool recovery applies to an `.env` file's bytes.
pub fn parse_envelope(bytes: &[u8], id: &str) -> Option<Envelope> {
    crate::spool::parse_envelope(bytes, id)
}

/// The bytes the spool writes for `env`.
pub fn encode_envelope(env: &Envelope) -> io::Result<Vec<u8>> {
    crate::spool::encode(env)
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
