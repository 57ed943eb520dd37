//! The message an attempt sends, streamed from its queue file: the first block is read
//! once per attempt and kept (all of most mail), the rest read again, a block at a time,
//! for each session that sends it. On the wire every line ends in CRLF and lines starting
//! with `.` are stuffed, whatever the stored octets hold.

use std::io::{self, Read, Seek};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::spool::Spool;

/// Octets read from the spool at a time.
const BLOCK: usize = 64 * 1024;

/// One queued message, as the attempt sends it.
pub(crate) struct Message {
    spool: Arc<Spool>,
    id: String,
    /// The message's length in octets.
    pub len: u64,
    /// Its first octets, up to [`BLOCK`]: the whole message when `len` fits.
    head: Vec<u8>,
}

impl Message {
    /// Opens the queue file of `id` and reads the first block.
    pub async fn load(spool: Arc<Spool>, id: &str) -> io::Result<Message> {
        let (spool2, id2) = (spool.clone(), id.to_owned());
        let (len, head) = tokio::task::spawn_blocking(move || {
            let (file, len) = spool2.open_message(&id2)?;
            let head = read_block(&file, len.min(BLOCK as u64) as usize)?;
            Ok::<_, io::Error>((len, head))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Message {
            spool,
            id: id.to_owned(),
            len,
            head,
        })
    }

    /// Whether the message may hold octets over 127 (`BODY=8BITMIME`): known for one
    /// that fits in a block, assumed for a larger one.
    pub fn eight_bit(&self) -> bool {
        (self.head.len() as u64) < self.len || !self.head.is_ascii()
    }

    /// Sends the message with dot-stuffing and the final `.` line. Each block of writing
    /// gets `stall` to go through.
    pub async fn write_data<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        stall: Duration,
    ) -> io::Result<()> {
        let mut stuffer = Stuffer::default();
        let mut out = Vec::with_capacity(self.head.len() + 1024);
        stuffer.encode(&self.head, &mut out);
        let mut rest = self.len - self.head.len() as u64;
        if rest > 0 {
            let (spool, id, skip) = (self.spool.clone(), self.id.clone(), self.head.len());
            let mut file = tokio::task::spawn_blocking(move || {
                let (mut file, len) = spool.open_message(&id)?;
                if len != skip as u64 + rest {
                    return Err(io::Error::other("queue file changed while being sent"));
                }
                file.seek(io::SeekFrom::Current(skip as i64))?;
                Ok(file)
            })
            .await
            .map_err(io::Error::other)??;
            while rest > 0 {
                write_timed(w, &out, stall).await?;
                out.clear();
                let want = rest.min(BLOCK as u64) as usize;
                let (f, block) = tokio::task::spawn_blocking(move || {
                    let block = read_block(&file, want);
                    (file, block)
                })
                .await
                .map_err(io::Error::other)?;
                file = f;
                let block = block?;
                stuffer.encode(&block, &mut out);
                rest -= want as u64;
            }
        }
        stuffer.finish(&mut out);
        timeout(stall, async {
            w.write_all(&out).await?;
            w.flush().await
        })
        .await
        .map_err(|_| timed_out())?
    }
}

/// Exactly `n` octets from the file's position (damage if it ends first).
fn read_block(mut file: &std::fs::File, n: usize) -> io::Result<Vec<u8>> {
    let mut block = vec![0; n];
    file.read_exact(&mut block)?;
    Ok(block)
}

async fn write_timed<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    stall: Duration,
) -> io::Result<()> {
    timeout(stall, w.write_all(bytes))
        .await
        .map_err(|_| timed_out())?
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timeout writing to the receiver")
}

/// SMTP's DATA encoding, fed in pieces: a `.` starting a line is doubled, and a LF or CR
/// that is not part of a CRLF becomes a CRLF, so no bare line end ever leaves the relay.
#[derive(Debug)]
struct Stuffer {
    at_line_start: bool,
    /// The last octet was a CR whose LF has not been seen yet.
    cr: bool,
}

impl Default for Stuffer {
    fn default() -> Stuffer {
        Stuffer {
            at_line_start: true,
            cr: false,
        }
    }
}

impl Stuffer {
    fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some(&b) = input.first() {
            if self.cr {
                self.cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            self.at_line_start = false;
            let n = memchr::memchr2(b'\r', b'\n', input).unwrap_or(input.len());
            out.extend_from_slice(&input[..n]);
            input = &input[n..];
            match input.first() {
                Some(b'\r') => self.cr = true,
                Some(_) => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                None => return,
            }
            input = &input[1..];
        }
    }

    /// Ends the last line if the message did not, then the `.` line.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(body: &[u8], piece: usize) -> Vec<u8> {
        let mut s = Stuffer::default();
        let mut out = Vec::new();
        for p in body.chunks(piece.max(1)) {
            s.encode(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing_and_line_ends_whatever_the_pieces() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"A: b\r\n\r\nx\r\n", b"A: b\r\n\r\nx\r\n.\r\n"),
            (b".\r\n..x\r\n.y\r\n", b"..\r\n...x\r\n..y\r\n.\r\n"),
            (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
            (b"no end", b"no end\r\n.\r\n"),
            (b"", b".\r\n"),
            (b"\xff\xfe.\r\n", b"\xff\xfe.\r\n.\r\n"),
            // Bare line ends never leave: each becomes CRLF, a dot after one is stuffed.
            (b"a\n.\nb\r.\r\n", b"a\r\n..\r\nb\r\n..\r\n.\r\n"),
            (b"a\r\r\nb\r", b"a\r\n\r\nb\r\n.\r\n"),
            (b"\n.\r\n", b"\r\n..\r\n.\r\n"),
        ];
        for (input, want) in cases {
            for piece in [1, 2, 3, 7, 1000] {
                assert_eq!(
                    stuffed(input, piece),
                    *want,
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    /// What goes out holds CR and LF only as CRLF, and a `.` line only as the last one.
    #[test]
    fn the_output_is_always_framed() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"\r\n.a"[(seed % 4) as usize]
                })
                .collect();
            let out = stuffed(&input, (seed % 5) as usize + 1);
            let body = out.strip_suffix(b".\r\n").expect("ends with the dot line");
            assert!(body.is_empty() || body.ends_with(b"\r\n"), "{input:?}");
            for line in body.split_inclusive(|&b| b == b'\n') {
                assert!(line.ends_with(b"\r\n"), "{input:?} -> {out:?}");
                assert!(!line[..line.len() - 2].contains(&b'\r'), "{input:?}");
                // A line starting with a dot carries the stuffed one.
                assert!(
                    !line.starts_with(b".") || line.starts_with(b".."),
                    "{input:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_large_message_streams_from_the_spool_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let spool = Arc::new(spool);
        let mut body = Vec::new();
        for i in 0..40_000 {
            body.extend_from_slice(if i % 7 == 0 { b".dot\r\n" } else { b"line\r\n" });
        }
        let env = crate::spool::Envelope {
            id: Spool::new_id(),
            arrival: 0,
            original_sender: String::new(),
            sender: String::new(),
            recipients: Vec::new(),
            client: crate::spool::ClientInfo {
                ip: "192.0.2.1".into(),
                helo: "h".into(),
                tls: None,
            },
            attempts: 0,
            next_attempt: 0,
            size: body.len() as u64,
            env_id: None,
            ret_full: false,
            delay_warned: false,
            dsn_owed: Vec::new(),
            held_since: None,
            held_secs: 0,
            sender_authenticated: None,
        };
        spool.store(&env, &body).unwrap();
        let m = Message::load(spool, &env.id).await.unwrap();
        assert_eq!(m.len, body.len() as u64);
        assert!(m.head.len() < body.len());
        let mut out = Vec::new();
        m.write_data(&mut out, Duration::from_secs(5))
            .await
            .unwrap();
        let dots = body
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"."))
            .count();
        assert_eq!(out.len(), body.len() + dots + 3);
        assert_eq!(stuffed(&body, 1 << 20), out);
    }
}
