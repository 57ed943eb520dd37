//! Reading the client: command lines with a length limit, and DATA with dot-unstuffing,
//! the SMTP-smuggling checks and a size limit. Only CRLF ends a line (RFC 5321 §2.3.8):
//! a bare LF or bare CR, in a command or in DATA, is reported and the caller closes the
//! session, so nothing the client sent after it is ever read as a command. Oversized
//! input is drained, not left half-read, so the reader stays in step with the client.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line in the buffer, ending in CRLF.
    Complete,
    /// Longer than the limit; drained up to its end.
    TooLong,
    /// The line held a LF not after a CR, or a CR not before its LF: the client does not
    /// speak SMTP's line ends, and may be trying to smuggle commands past a peer.
    BareLineEnd,
    /// The client closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line into `buf` (cleared first), at most `max` octets with its CRLF.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    // The line's last octet read so far was a CR; a CR anywhere else was seen.
    let mut last_cr = false;
    let mut stray_cr = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let seg = &avail[..take];
        let body = if done { &seg[..take - 1] } else { seg };
        if let Some(&last) = body.last() {
            // A CR before this segment's first octet was not followed by LF.
            stray_cr |= last_cr;
            stray_cr |= memchr::memchr(b'\r', &body[..body.len() - 1]).is_some();
            last_cr = last == b'\r';
        }
        if !too_long {
            if buf.len() + take > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(seg);
            }
        }
        r.consume(take);
        if done {
            return Ok(if stray_cr || !last_cr {
                Line::BareLineEnd
            } else if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// Where DATA puts the message as it arrives (unstuffed octets, in order).
pub trait DataSink {
    /// Takes octets; fast, may only buffer them.
    fn push(&mut self, bytes: &[u8]);
    /// Called after each read from the client: moves buffered octets on (to a file, say)
    /// so that what is held in memory stays bounded.
    fn settle(&mut self) -> impl Future<Output = ()> + Send;
}

impl DataSink for Vec<u8> {
    fn push(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    async fn settle(&mut self) {}
}

/// What DATA brought, besides the message itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DataReport {
    /// The message passed the size limit; what was read past it was discarded (the sink
    /// got a start of the message only).
    pub too_big: bool,
    /// `Received:` headers in the header section (loop detection).
    pub received_headers: usize,
    /// Message octets (after unstuffing) given to the sink.
    pub size: u64,
    /// The message holds a NUL: not 8bit data (RFC 6152, RFC 2045 §2.8), and a receiver
    /// that drops NULs would take `<CRLF><NUL>.<CRLF>` for the end of the data.
    pub nul: bool,
}

/// Why DATA did not end with `<CRLF>.<CRLF>`.
#[derive(Debug)]
pub enum DataError {
    Timeout,
    Eof,
    Io(io::Error),
    /// A LF not after a CR, or a CR not before a LF (RFC 5321 §2.3.8; the SMTP-smuggling
    /// vector). Reading stopped there: nothing after it was taken as message or command.
    BareLineEnd {
        lf: bool,
    },
}

/// DATA may take `timeout` for each this many octets received.
const OCTETS_PER_TIMEOUT: u64 = 64 * 1024;

/// Where the DATA reader is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line; the one before ended in CRLF (or this is the first).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` CR at the start of a line: a LF now ends DATA.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR inside a line: only a LF may follow.
    Cr,
}

/// Reads message data after the 354 up to `<CRLF>.<CRLF>`, undoing dot-stuffing, into
/// `sink`. Only a `.` line after a real CRLF, itself ended by CRLF, ends the data; a bare
/// LF or bare CR stops reading at once with [`DataError::BareLineEnd`].
///
/// `timeout` bounds each wait for more data, and the whole of DATA gets `timeout` per
/// 64 KiB received: a client trickling a byte at a time (slowloris), which never idles
/// that long, is cut all the same. (An honest client needs 64 KiB per `timeout` on
/// average: 364 octets/s with the default 3 minutes.)
pub async fn read_data<R: AsyncBufRead + Unpin, S: DataSink>(
    r: &mut R,
    sink: &mut S,
    max_size: u64,
    timeout: Duration,
) -> Result<DataReport, DataError> {
    let started = tokio::time::Instant::now();
    let mut received = 0u64;
    let mut framing = Framing::new(max_size);
    loop {
        let chunks = u32::try_from(received / OCTETS_PER_TIMEOUT).unwrap_or(u32::MAX);
        let budget = timeout.saturating_mul(chunks.saturating_add(1));
        let left = budget.saturating_sub(started.elapsed());
        let avail = match tokio::time::timeout(left.min(timeout), r.fill_buf()).await {
            Err(_) => return Err(DataError::Timeout),
            Ok(Err(e)) => return Err(DataError::Io(e)),
            Ok(Ok([])) => return Err(DataError::Eof),
            Ok(Ok(a)) => a,
        };
        let (used, end) = framing.feed(avail, sink);
        received += used as u64;
        r.consume(used);
        match end {
            Some(Ok(())) => return Ok(framing.report),
            Some(Err(lf)) => return Err(DataError::BareLineEnd { lf }),
            None => sink.settle().await,
        }
    }
}

/// The DATA state machine, fed what the client sent in pieces of any size.
struct Framing {
    at: At,
    report: DataReport,
    max_size: u64,
    in_headers: bool,
    /// The current line's first octets (header name check) and its length so far.
    start: [u8; 9],
    line_len: usize,
}

impl Framing {
    fn new(max_size: u64) -> Framing {
        Framing {
            at: At::LineStart,
            report: DataReport::default(),
            max_size,
            in_headers: true,
            start: [0; 9],
            line_len: 0,
        }
    }

    /// Takes octets from `input`: how many it used, and whether DATA ended (`Ok`) or
    /// broke on a bare LF (`Err(true)`) or bare CR (`Err(false)`).
    fn feed<S: DataSink>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> (usize, Option<Result<(), bool>>) {
        let mut i = 0;
        while i < input.len() {
            match self.at {
                At::LineStart => {
                    self.line_len = 0;
                    if input[i] == b'.' {
                        self.at = At::Dot;
                        i += 1;
                    } else {
                        self.at = At::Text;
                    }
                }
                // A stuffed dot is dropped; what follows is text.
                At::Dot => {
                    if input[i] == b'\r' {
                        self.at = At::DotCr;
                        i += 1;
                    } else {
                        self.at = At::Text;
                    }
                }
                At::DotCr => {
                    return if input[i] == b'\n' {
                        (i + 1, Some(Ok(())))
                    } else {
                        (i, Some(Err(false)))
                    };
                }
                At::Text => {
                    let rest = &input[i..];
                    let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    self.text(&rest[..n], sink);
                    i += n;
                    if i < input.len() {
                        if input[i] == b'\n' {
                            return (i, Some(Err(true)));
                        }
                        self.at = At::Cr;
                        i += 1;
                    }
                }
                At::Cr => {
                    if input[i] != b'\n' {
                        return (i, Some(Err(false)));
                    }
                    i += 1;
                    self.end_line(sink);
                }
            }
        }
        (i, None)
    }

    fn text<S: DataSink>(&mut self, bytes: &[u8], sink: &mut S) {
        if bytes.is_empty() {
            return;
        }
        if self.in_headers && self.line_len < self.start.len() {
            let n = (self.start.len() - self.line_len).min(bytes.len());
            self.start[self.line_len..self.line_len + n].copy_from_slice(&bytes[..n]);
        }
        self.line_len += bytes.len();
        self.report.nul |= memchr::memchr(0, bytes).is_some();
        self.out(bytes, sink);
    }

    fn end_line<S: DataSink>(&mut self, sink: &mut S) {
        if self.in_headers {
            if self.line_len == 0 {
                self.in_headers = false;
            } else if self.line_len >= 9 && self.start.eq_ignore_ascii_case(b"received:") {
                self.report.received_headers += 1;
            }
        }
        self.out(b"\r\n", sink);
        self.at = At::LineStart;
    }

    fn out<S: DataSink>(&mut self, bytes: &[u8], sink: &mut S) {
        if self.report.too_big {
            return;
        }
        if self.report.size + bytes.len() as u64 > self.max_size {
            self.report.too_big = true;
            return;
        }
        self.report.size += bytes.len() as u64;
        sink.push(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn data(input: &[u8], max: u64) -> (Vec<u8>, Result<DataReport, DataError>) {
        let mut r = tokio::io::BufReader::with_capacity(7, input); // small buffer: lines span reads
        let mut out = Vec::new();
        let rep = read_data(&mut r, &mut out, max, Duration::from_secs(5)).await;
        (out, rep)
    }

    #[tokio::test]
    async fn unstuffs_and_ends_at_crlf_dot_crlf() {
        let (out, rep) = data(
            b"Subject: x\r\nReceived: a\r\n\r\n..dot\r\n..\r\n.x\r\nReceived: body\r\n.\r\nNEXT",
            1000,
        )
        .await;
        let rep = rep.unwrap();
        assert_eq!(
            out,
            b"Subject: x\r\nReceived: a\r\n\r\n.dot\r\n.\r\nx\r\nReceived: body\r\n"
        );
        assert_eq!(rep.received_headers, 1);
        assert_eq!(rep.size, out.len() as u64);
        assert!(!rep.too_big);
    }

    #[tokio::test]
    async fn an_empty_message_ends_at_once() {
        let (out, rep) = data(b".\r\nQUIT\r\n", 1000).await;
        assert!(out.is_empty());
        assert_eq!(rep.unwrap().size, 0);
    }

    /// Every fake end of data from the SMTP-smuggling research: none ends the message,
    /// and each one that holds a bare CR or LF stops reading right there.
    #[tokio::test]
    async fn only_crlf_dot_crlf_ends_data() {
        let fakes: &[&[u8]] = &[
            b"\n.\n",
            b"\n.\r",
            b"\r.\n",
            b"\r.\r",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n.\n",
            b"\r\n.\r\r\n",
            b"\r\r\n.\r\r\n",
            b"\n\n.\n\n",
            b"\r\n.\r\0\n",
            b"\r\n..\r",
        ];
        for fake in fakes {
            let mut input = b"Subject: s\r\n\r\nbody".to_vec();
            input.extend_from_slice(fake);
            input.extend_from_slice(b"MAIL FROM:<smuggled@example.org>\r\n.\r\n");
            let (_, rep) = data(&input, 1000).await;
            assert!(
                matches!(rep, Err(DataError::BareLineEnd { .. })),
                "{:?}: {rep:?}",
                String::from_utf8_lossy(fake)
            );
        }
        // No bare line end: not a terminator, the text is message content.
        let (out, rep) = data(
            b"Subject: s\r\n\r\nbody\r\n\0.\r\nMAIL FROM:<smuggled@example.org>\r\n.\r\n",
            1000,
        )
        .await;
        assert!(rep.unwrap().nul);
        assert_eq!(
            out,
            b"Subject: s\r\n\r\nbody\r\n\0.\r\nMAIL FROM:<smuggled@example.org>\r\n"
        );
    }

    #[tokio::test]
    async fn reading_stops_at_the_bare_line_end() {
        let input = b"a\nMAIL FROM:<x@y>\r\n";
        let mut r = tokio::io::BufReader::new(&input[..]);
        let rep = read_data(&mut r, &mut Vec::new(), 1000, Duration::from_secs(5)).await;
        assert!(matches!(rep, Err(DataError::BareLineEnd { lf: true })));
        assert_eq!(r.buffer(), b"\nMAIL FROM:<x@y>\r\n");
        let (_, rep) = data(b"a\rb\r\n.\r\n", 1000).await;
        assert!(matches!(rep, Err(DataError::BareLineEnd { lf: false })));
    }

    #[tokio::test]
    async fn too_big_is_drained() {
        let mut input = b"x".repeat(100);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&b"y\r\n".repeat(100));
        input.extend_from_slice(b".\r\nNEXT");
        let mut r = tokio::io::BufReader::with_capacity(7, &input[..]);
        let mut out = Vec::new();
        let rep = read_data(&mut r, &mut out, 50, Duration::from_secs(5)).await;
        assert!(rep.unwrap().too_big);
        assert!(out.len() <= 50);
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut rest)
            .await
            .unwrap();
        assert_eq!(rest, b"NEXT");
    }

    #[tokio::test]
    async fn long_lines_pass_intact() {
        let mut input = b".".to_vec();
        input.extend_from_slice(&b"z".repeat(200_000));
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, rep) = data(&input, 1 << 20).await;
        rep.unwrap();
        assert_eq!(out.len(), 200_002);
        assert!(out.starts_with(b"zz"));
    }

    #[tokio::test]
    async fn a_trickle_is_cut_though_it_never_idles() {
        let (mut client, server) = tokio::io::duplex(64);
        let trickle = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in b"Subject: slow\r\n\r\nbody\r\n".iter().cycle().take(100) {
                if client.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut r = tokio::io::BufReader::new(server);
        let started = std::time::Instant::now();
        let rep = read_data(&mut r, &mut Vec::new(), 1000, Duration::from_millis(400)).await;
        assert!(matches!(rep, Err(DataError::Timeout)), "{rep:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
        drop(r);
        trickle.await.unwrap();
    }

    #[tokio::test]
    async fn eof_before_the_dot() {
        let (_, rep) = data(b"a\r\nb\r\n", 1000).await;
        assert!(matches!(rep, Err(DataError::Eof)));
    }

    #[tokio::test]
    async fn lines_are_limited() {
        let input = b"short\r\nxxxxxxxxxxxxxxxxxxxx\r\nok\r\n".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"short\r\n");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"ok\r\n");
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Line::Eof);
    }

    #[tokio::test]
    async fn command_lines_end_at_crlf_only() {
        for (input, want) in [
            (&b"RSET\nMAIL FROM:<a@b>\r\n"[..], Line::BareLineEnd),
            (b"RSET\rMAIL FROM:<a@b>\r\n", Line::BareLineEnd),
            (b"RSET\r\r\n", Line::BareLineEnd),
            (b"\n", Line::BareLineEnd),
            (b"NOOP\r\n", Line::Complete),
            (b"\r\n", Line::Complete),
        ] {
            for cap in [1, 2, 3, 64] {
                let mut r = tokio::io::BufReader::with_capacity(cap, input);
                let got = read_line(&mut r, &mut Vec::new(), 100).await.unwrap();
                assert_eq!(
                    got,
                    want,
                    "{:?} read {cap} at a time",
                    String::from_utf8_lossy(input)
                );
            }
        }
        // Too long and a bare LF: the bare LF is what counts.
        let input = b"xxxxxxxxxxxx\nRCPT TO:<a@b>\r\n";
        let mut r = tokio::io::BufReader::with_capacity(4, &input[..]);
        assert_eq!(
            read_line(&mut r, &mut Vec::new(), 5).await.unwrap(),
            Line::BareLineEnd
        );
    }
}
