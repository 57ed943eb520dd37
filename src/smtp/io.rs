//! Reading the client: command lines with a length limit, and DATA with dot-unstuffing,
//! the SMTP-smuggling checks (bare LF, bare CR) and a size limit. Oversized input is
//! drained, not left half-read, so the reader stays in step with the client.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line in the buffer, ending in `\n`.
    Complete,
    /// Longer than the limit; drained up to its `\n`.
    TooLong,
    /// The client closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line into `buf` (cleared first), at most `max` octets with its line end.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !too_long {
            if buf.len() + take > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// What DATA brought, besides the message itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DataReport {
    /// The message passed the size limit; what was read past it was discarded.
    pub too_big: bool,
    /// A line ended in LF alone (RFC 5321 §2.3.8; the SMTP-smuggling vector).
    pub bare_lf: bool,
    /// A CR not followed by LF.
    pub bare_cr: bool,
    /// `Received:` headers in the header section (loop detection).
    pub received_headers: usize,
}

/// Why DATA did not end with `<CRLF>.<CRLF>`.
#[derive(Debug)]
pub enum DataError {
    Timeout,
    Eof,
    Io(io::Error),
}

/// DATA may take `timeout` for each this many octets received.
const OCTETS_PER_TIMEOUT: u64 = 64 * 1024;

/// Reads message data after the 354 up to `<CRLF>.<CRLF>`, undoing dot-stuffing, into
/// `out`. Lines are only ever terminated by CRLF: a bare LF never ends the data, it is
/// reported, and the caller refuses the message.
///
/// `timeout` bounds each wait for more data, and the whole of DATA gets `timeout` per
/// 64 KiB received: a client trickling a byte at a time (slowloris), which never idles
/// that long, is cut all the same. (An honest client needs 64 KiB per `timeout` on
/// average: 364 octets/s with the default 3 minutes.)
pub async fn read_data<R: AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max_size: usize,
    timeout: Duration,
) -> Result<DataReport, DataError> {
    read_data_capped(r, out, max_size, timeout, DATA_LINE_CAP).await
}

/// A DATA line longer than this is not kept whole; it cannot be the terminator anyway.
const DATA_LINE_CAP: usize = 64 * 1024;

/// [`read_data`] with the line cap as a parameter, so the fuzz targets can reach the
/// long-line path with small inputs.
pub(crate) async fn read_data_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max_size: usize,
    timeout: Duration,
    line_cap: usize,
) -> Result<DataReport, DataError> {
    let started = tokio::time::Instant::now();
    let mut received = 0u64;
    let mut report = DataReport::default();
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    let mut in_headers = true;
    let mut line_overflowed = false;
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
        let (take, complete) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        received += take as u64;
        let segment = &avail[..take];
        if !complete && line.len() + segment.len() > line_cap {
            // Flush the long line's start into the message and keep reading it.
            let first = !line_overflowed;
            line.extend_from_slice(segment);
            let keep_cr = line.last() == Some(&b'\r');
            let body = if keep_cr {
                &line[..line.len() - 1]
            } else {
                &line[..]
            };
            check_bare_cr(body, false, &mut report);
            push(out, unstuff(body, first), max_size, &mut report);
            line.clear();
            if keep_cr {
                line.push(b'\r');
            }
            line_overflowed = true;
            r.consume(take);
            continue;
        }
        line.extend_from_slice(segment);
        r.consume(take);
        if !complete {
            continue;
        }
        let crlf = line.ends_with(b"\r\n");
        if !crlf {
            report.bare_lf = true;
        }
        check_bare_cr(&line, crlf, &mut report);
        if !line_overflowed && line == b".\r\n" {
            if report.too_big {
                out.clear();
            }
            return Ok(report);
        }
        let content = unstuff(&line, !line_overflowed);
        if in_headers && !line_overflowed {
            if content == b"\r\n" || content == b"\n" {
                in_headers = false;
            } else if content.len() >= 9 && content[..9].eq_ignore_ascii_case(b"received:") {
                report.received_headers += 1;
            }
        }
        push(out, content, max_size, &mut report);
        line.clear();
        line_overflowed = false;
    }
}

/// Drops the stuffed dot at the start of a line.
fn unstuff(line: &[u8], at_line_start: bool) -> &[u8] {
    if at_line_start && line.first() == Some(&b'.') {
        &line[1..]
    } else {
        line
    }
}

fn push(out: &mut Vec<u8>, bytes: &[u8], max_size: usize, report: &mut DataReport) {
    if report.too_big {
        return;
    }
    if out.len() + bytes.len() > max_size {
        report.too_big = true;
        out.clear();
        out.shrink_to(0);
        return;
    }
    out.extend_from_slice(bytes);
}

/// A CR anywhere but in the final CRLF is a bare CR.
fn check_bare_cr(line: &[u8], ends_crlf: bool, report: &mut DataReport) {
    let body = if ends_crlf {
        &line[..line.len() - 2]
    } else {
        line
    };
    if memchr::memchr(b'\r', body).is_some() {
        report.bare_cr = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn data(input: &[u8], max: usize) -> (Vec<u8>, Result<DataReport, DataError>) {
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
        assert!(!rep.bare_lf && !rep.bare_cr && !rep.too_big);
    }

    #[tokio::test]
    async fn bare_lf_and_cr_are_reported_not_terminators() {
        let (_, rep) = data(b"a\nb\r\n.\n.\r\n", 1000).await;
        assert!(rep.unwrap().bare_lf);
        let (_, rep) = data(b"a\rb\r\n.\r\n", 1000).await;
        assert!(rep.unwrap().bare_cr);
    }

    #[tokio::test]
    async fn too_big_is_drained() {
        let mut input = b"x".repeat(100);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&b"y\r\n".repeat(100));
        input.extend_from_slice(b".\r\n");
        let (out, rep) = data(&input, 50).await;
        assert!(rep.unwrap().too_big);
        assert!(out.is_empty());
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
}
