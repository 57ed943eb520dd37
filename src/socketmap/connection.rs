//! One lookup connection's thread: blocking reads under the idle and request timeouts,
//! requests answered in order.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::dispatch::{Protocol, Step, answer_one};
use super::server::Shared;
use super::tcp_table;

/// Per-connection read buffer: a whole request of either protocol fits, with room for
/// a pipelining client's next ones.
const BUFFER: usize = 2 * tcp_table::MAX_LINE;

/// A blocking stream with the timeouts a connection needs.
pub(super) trait Blocking: Read + Write {
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
pub(super) fn connection<S: Blocking>(shared: &Shared, mut stream: S, protocol: Protocol) {
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
        {
            // The codec and rules in force now (a reload may have replaced them since
            // the last batch); not held across the read below.
            let lookups = shared.lookups.load();
            while used < filled {
                match answer_one(&lookups, protocol, &buf[used..filled], &mut out) {
                    Step::More => break,
                    Step::Answered(n) => used += n,
                    Step::Close => {
                        close = true;
                        break;
                    }
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
