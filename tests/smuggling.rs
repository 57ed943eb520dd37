//! SMTP smuggling, from the attacker's side: the real `srs-relay serve` on loopback, raw
//! bytes on the wire, a recording receiver as the next hop.
//!
//! Written from the standards and the published research, not from the implementation:
//! RFC 5321 §2.3.8 (lines end in CRLF; bare CR and bare LF are not line ends),
//! §4.1.1.4 (DATA ends at `<CRLF>.<CRLF>`), §4.5.2 (dot-stuffing); SEC Consult's SMTP
//! smuggling research (CVE-2023-51764 Postfix, -51765 Sendmail, -51766 Exim) and the
//! end-of-data sequences of its scanner. Each attack is one legitimate transaction from
//! `legit@example.org` to the alias whose DATA holds a fake end-of-data sequence followed by
//! a pipelined second transaction from `smuggled@example.org`, then the real
//! `<CRLF>.<CRLF>` and QUIT. The property under test: no message from `smuggled@` is ever
//! queued or delivered, and
//! - when the DATA holds a bare CR or a bare LF: one `550 5.5.2` reply, the connection
//!   closes, no other reply (QUIT included), nothing delivered;
//! - otherwise (NUL, dot-space, long lines...): the fake sequence is body text: at most one
//!   `250 ... queued` (or a refusal), `221` to QUIT, at most the one legit message delivered,
//!   holding the smuggled text in its body.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The alias of the harness (`john@forward.example: john@home.example`).
const ALIAS: &str = "john@forward.example";
/// How long the server has to close the connection (or send a reply).
const WAIT: Duration = Duration::from_secs(5);
/// After the expected deliveries (if any), how long nothing more may arrive.
const QUIET: Duration = Duration::from_millis(1000);
/// Socket read timeout between checks of a deadline.
const POLL: Duration = Duration::from_millis(50);

// ---- the wire ----

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A raw SMTP client that never blocks longer than asked, notices the server closing (EOF,
/// reset, TLS without close_notify) and keeps a transcript for failure messages.
struct Wire {
    stream: Stream,
    tcp: TcpStream,
    pending: Vec<u8>,
    closed: bool,
    transcript: String,
}

impl Wire {
    fn connect(addr: &str) -> Wire {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(POLL)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        Wire {
            stream: Stream::Plain(tcp.try_clone().unwrap()),
            tcp,
            pending: Vec::new(),
            closed: false,
            transcript: String::new(),
        }
    }

    /// One read attempt (at most [`POLL`]).
    fn fill(&mut self) {
        if self.closed {
            return;
        }
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                self.transcript.push_str("S: <EOF>\n");
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.transcript
                    .push_str(&format!("S: {}\n", buf[..n].escape_ascii()));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                self.closed = true;
                self.transcript.push_str(&format!("S: <closed: {e}>\n"));
            }
        }
    }

    /// A complete (possibly multi-line) reply from what has been read, if there is one.
    fn take_reply(&mut self) -> Option<String> {
        let mut start = 0;
        loop {
            let end = self.pending[start..]
                .windows(2)
                .position(|w| w == b"\r\n")?
                + start
                + 2;
            let line = &self.pending[start..end];
            let last = line.len() < 6 || line[3] != b'-';
            start = end;
            if last {
                let r: Vec<u8> = self.pending.drain(..end).collect();
                return Some(String::from_utf8_lossy(&r).into_owned());
            }
        }
    }

    /// The next reply, or `None` if the server closed or `limit` passed first.
    fn reply(&mut self, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            if let Some(r) = self.take_reply() {
                return Some(r);
            }
            if self.closed || Instant::now() >= end {
                return None;
            }
            self.fill();
        }
    }

    /// Writes everything; false (noted in the transcript) if the server is gone.
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.transcript
            .push_str(&format!("C: {}\n", bytes.escape_ascii()));
        match self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
        {
            Ok(()) => true,
            Err(e) => {
                self.transcript
                    .push_str(&format!("C: <write failed: {e}>\n"));
                false
            }
        }
    }

    /// Sends one command line and returns the reply ("" if none came).
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply(WAIT).unwrap_or_default()
    }

    /// Reads until the server closes or `limit` passes; the replies that came (an
    /// incomplete last line is returned as is).
    fn rest(&mut self, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        while !self.closed && Instant::now() < end {
            self.fill();
        }
        let mut out = Vec::new();
        while let Some(r) = self.take_reply() {
            out.push(r);
        }
        if !self.pending.is_empty() {
            out.push(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
        }
        out
    }

    /// After a `220` to STARTTLS: the TLS handshake (any certificate is trusted).
    fn upgrade(&mut self) -> Result<(), String> {
        if !self.pending.is_empty() {
            return Err(format!(
                "octets after the 220 to STARTTLS, in the clear: {}",
                self.pending.escape_ascii()
            ));
        }
        let conn = rustls::ClientConnection::new(
            tls_client_trusting_any(rustls::DEFAULT_VERSIONS),
            "relay.test".try_into().unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, self.tcp.try_clone().unwrap());
        self.tcp.set_read_timeout(Some(WAIT)).unwrap();
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                return Err(format!("TLS handshake: {e}"));
            }
        }
        self.tcp.set_read_timeout(Some(POLL)).unwrap();
        self.transcript.push_str("-- TLS --\n");
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }
}

// ---- a relay with a receiver behind it ----

/// A relay whose smarthost is a recording [`Receiver`], optionally offering STARTTLS.
struct Setup {
    relay: Relay,
    receiver: Receiver,
    _certs: Option<tempfile::TempDir>,
}

impl Setup {
    fn start(tls: bool) -> Setup {
        let receiver = Receiver::start();
        let mut extra = "[queue]\nretry_intervals = [\"1s\"]\n".to_owned();
        let certs = tls.then(|| {
            let dir = tempfile::tempdir().unwrap();
            let o = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
                .args(["gen-cert", "--hostname", "relay.test", "--dir"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            extra.push_str(&format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\nrequire = false\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            ));
            dir
        });
        let relay = Relay::start_full(
            "",
            &format!("smarthost = \"{}\"\n", receiver.addr()),
            &extra,
        );
        Setup {
            relay,
            receiver,
            _certs: certs,
        }
    }

    /// Connected and greeted.
    fn connect(&self) -> Wire {
        let mut w = Wire::connect(&self.relay.addr());
        let greeting = w.reply(WAIT).unwrap_or_default();
        assert!(greeting.starts_with("220"), "greeting: {greeting:?}");
        w
    }

    /// Waits for `n` deliveries (bounded), then [`QUIET`] for any more; all of them.
    fn settle(&self, n: usize) -> Vec<Received> {
        if n > 0 {
            wait_until(Duration::from_secs(10), || self.receiver.count() >= n);
        }
        std::thread::sleep(QUIET);
        self.receiver.messages()
    }

    fn log_tail(&self) -> String {
        let log = self.relay.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

// ---- the attack ----

const LEGIT: &str = "legit@example.org";
const SMUGGLED: &str = "smuggled@example.org";
/// Text of the smuggled message's body: when a fake sequence is (rightly) body text, the
/// legit message carries it.
const SMUGGLED_BODY: &str = "SMUGGLED BODY";

fn legit_part(tag: &str) -> Vec<u8> {
    format!(
        "From: <{LEGIT}>\r\nTo: <{ALIAS}>\r\nSubject: legit {tag}\r\n\
         Message-ID: <legit.{tag}@example.org>\r\n\r\nlegit body"
    )
    .into_bytes()
}

/// The pipelined second transaction, up to (not including) its end of data.
fn smuggled_part(tag: &str) -> Vec<u8> {
    format!(
        "MAIL FROM:<{SMUGGLED}>\r\nRCPT TO:<{ALIAS}>\r\nDATA\r\n\
         From: <{SMUGGLED}>\r\nTo: <{ALIAS}>\r\nSubject: smuggled {tag}\r\n\
         Message-ID: <smuggled.{tag}@example.org>\r\n\r\n{SMUGGLED_BODY}"
    )
    .into_bytes()
}

/// A bare CR (not followed by LF) or a bare LF (not preceded by CR) anywhere.
fn has_bare_cr_or_lf(data: &[u8]) -> bool {
    data.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && data.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
    })
}

/// The header section (up to the first empty line) of what the receiver got, with the
/// relay's own Received header: lower case.
fn headers_lower(data: &[u8]) -> String {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).to_ascii_lowercase()
}

/// The delivered message is (or claims to be) the smuggled one: its SRS-rewritten envelope
/// sender or its header section names `smuggled@`.
fn is_smuggled(m: &Received) -> bool {
    m.mail_from.to_ascii_lowercase().contains("smuggled")
        || headers_lower(&m.data).contains("smuggled")
}

fn summary(got: &[Received]) -> String {
    got.iter()
        .map(|m| {
            format!(
                "  MAIL FROM:<{}> RCPT {:?} data: {}\n",
                m.mail_from,
                m.rcpt_to,
                m.data[..m.data.len().min(400)].escape_ascii()
            )
        })
        .collect()
}

fn queued(replies: &[String]) -> usize {
    replies
        .iter()
        .filter(|r| r.starts_with("250") && r.contains("queued"))
        .count()
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Each command waits for its reply.
    Plain,
    /// EHLO, MAIL, RCPT and DATA in one write, then the data after the 354.
    Pipelined,
    /// STARTTLS first, then as `Plain` inside TLS.
    StartTls,
}

/// Legit transaction up to the 354; panics (naming the case) if the relay refuses it.
fn open_transaction(s: &Setup, mode: Mode, what: &str) -> Wire {
    let mut w = s.connect();
    if let Mode::StartTls = mode {
        let ehlo = w.cmd("EHLO attacker.example");
        assert!(ehlo.contains("STARTTLS"), "{what}: EHLO: {ehlo:?}");
        let r = w.cmd("STARTTLS");
        assert!(r.starts_with("220"), "{what}: STARTTLS: {r:?}");
        if let Err(e) = w.upgrade() {
            panic!("{what}: {e}\n{}", w.transcript);
        }
    }
    let want = ["250", "250", "250", "354"];
    let got: Vec<String> = match mode {
        Mode::Pipelined => {
            w.send(
                format!(
                    "EHLO attacker.example\r\nMAIL FROM:<{LEGIT}>\r\nRCPT TO:<{ALIAS}>\r\nDATA\r\n"
                )
                .as_bytes(),
            );
            (0..4).map(|_| w.reply(WAIT).unwrap_or_default()).collect()
        }
        Mode::Plain | Mode::StartTls => [
            "EHLO attacker.example".to_owned(),
            format!("MAIL FROM:<{LEGIT}>"),
            format!("RCPT TO:<{ALIAS}>"),
            "DATA".to_owned(),
        ]
        .iter()
        .map(|c| w.cmd(c))
        .collect(),
    };
    for (g, want) in got.iter().zip(want) {
        assert!(
            g.starts_with(want),
            "{what}: the legit transaction was refused (setup, not the attack): {g:?}\n{}",
            w.transcript
        );
    }
    w
}

/// One attack: `seq` between the legit body and the smuggled transaction.
fn run_sequence(name: &str, seq: &[u8], mode: Mode) {
    let shown = match seq.len() {
        0..=24 => seq.escape_ascii().to_string(),
        n => format!("{}... ({n} octets)", seq[..24].escape_ascii()),
    };
    let what = format!("sequence {name} ({shown:?}) [{mode:?}]");
    let s = Setup::start(matches!(mode, Mode::StartTls));
    let mut w = open_transaction(&s, mode, &what);

    let mut data = legit_part(name);
    data.extend_from_slice(seq);
    data.extend_from_slice(&smuggled_part(name));
    data.extend_from_slice(b"\r\n.\r\n");
    let bare = has_bare_cr_or_lf(&data);
    let mut wire = data.clone();
    wire.extend_from_slice(b"QUIT\r\n");
    w.send(&wire);
    let replies = w.rest(WAIT);

    let mut problems = Vec::new();
    if !w.closed {
        problems.push(format!(
            "the connection is still open {WAIT:?} after the data and QUIT"
        ));
    }
    if queued(&replies) > 1 {
        problems.push(format!(
            "{} messages queued: the smuggled transaction was run",
            queued(&replies)
        ));
    }
    let accepted = replies.first().is_some_and(|r| r.starts_with("250"));
    if bare {
        // RFC 5321 §2.3.8: a bare CR or LF is no line end; refused, and the session ends.
        match replies.as_slice() {
            [r] if r.starts_with("550 5.5.2") => {}
            _ => problems.push(format!(
                "want exactly one reply, `550 5.5.2`, then the connection closed; got {replies:?}"
            )),
        }
    } else {
        // No bare CR or LF: the fake sequence is body text and the message ends at the
        // real <CRLF>.<CRLF>: one reply for it (queued, or refused), then 221 to QUIT.
        let first_ok = replies
            .first()
            .is_some_and(|r| (r.starts_with("250") && r.contains("queued")) || r.starts_with('5'));
        let rest_ok = match replies.get(1) {
            Some(r) => r.starts_with("221") && replies.len() == 2,
            None => !accepted,
        };
        if !first_ok || !rest_ok {
            problems.push(format!(
                "want one reply to the data (250 queued, or a 5xx) then 221 to QUIT; got {replies:?}"
            ));
        }
    }

    let expect = usize::from(accepted && !bare);
    let got = s.settle(expect);
    let smuggled = got.iter().filter(|m| is_smuggled(m)).count();
    if smuggled > 0 {
        problems.push(format!("{smuggled} message(s) from {SMUGGLED} delivered"));
    }
    if got.len() != expect {
        problems.push(format!("{} message(s) delivered, want {expect}", got.len()));
    }
    if expect == 1 && got.len() == 1 {
        let m = &got[0];
        if !m.mail_from.contains("=legit@") {
            problems.push(format!(
                "delivered envelope sender {} is not legit's SRS",
                m.mail_from
            ));
        }
        if !m
            .data
            .windows(SMUGGLED_BODY.len())
            .any(|x| x == SMUGGLED_BODY.as_bytes())
        {
            problems.push("the legit message lost the text after the fake sequence".into());
        }
    }
    eprintln!("{what}: replies {replies:?}\ndelivered:\n{}", summary(&got));
    if !problems.is_empty() {
        panic!(
            "{what}: SMTP smuggling:\n- {}\ntranscript:\n{}delivered:\n{}relay log (tail):\n{}",
            problems.join("\n- "),
            w.transcript,
            summary(&got),
            s.log_tail()
        );
    }
}

/// One module per fake end-of-data sequence, with a test per [`Mode`]:
/// `cargo test --test smuggling lf_dot_lf` runs the three.
macro_rules! sequences {
    ($($name:ident => $seq:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn plain() {
                run_sequence(stringify!($name), &$seq[..], Mode::Plain);
            }
            #[test]
            fn pipelined() {
                run_sequence(stringify!($name), &$seq[..], Mode::Pipelined);
            }
            #[test]
            fn starttls() {
                run_sequence(stringify!($name), &$seq[..], Mode::StartTls);
            }
        }
    )*};
}

sequences! {
    // The issue's list (SEC Consult, CVE-2023-51764/51765/51766).
    lf_dot_lf => b"\n.\n";
    lf_dot_cr => b"\n.\r";
    cr_dot_lf => b"\r.\n";
    cr_dot_cr => b"\r.\r";
    lf_dot_crlf => b"\n.\r\n"; // also written <LF>.<CR><LF>
    cr_dot_crlf => b"\r.\r\n";
    crlf_dot_cr => b"\r\n.\r";
    crlf_dot_lf => b"\r\n.\n";
    crlf_nul_dot_crlf => b"\r\n\x00.\r\n";
    crlf_dot_cr_crlf => b"\r\n.\r\r\n";
    cr_crlf_dot_cr_crlf => b"\r\r\n.\r\r\n";
    lf_lf_dot_lf_lf => b"\n\n.\n\n";
    // Further sequences from published scanners and checkers.
    lf_dotdot_crlf => b"\n..\r\n";
    lf_lf_dot_crlf => b"\n\n.\r\n";
    crlf_lf_dot_crlf => b"\r\n\n.\r\n";
    crlf_cr_dot_crlf => b"\r\n\r.\r\n";
    lfcr_dot_lfcr => b"\n\r.\n\r";
    crlf_nul_dot_cr => b"\r\n\x00.\r";
    crlf_nul_dot_lf => b"\r\n\x00.\n";
    crlf_dot_nul_crlf => b"\r\n.\x00\r\n";
    // Parsers that trim or unstuff before looking for the terminator.
    crlf_dotdot_crlf => b"\r\n..\r\n";
    crlf_dot_sp_crlf => b"\r\n. \r\n";
    crlf_dot_tab_crlf => b"\r\n.\t\r\n";
    crlf_sp_dot_crlf => b"\r\n .\r\n";
    crlf_dot_no_eol => b"\r\n.";
}

/// `<CRLF>` + `n` octets of text + `.<CRLF>`: a reader that cuts long lines into pieces
/// (at a line-length limit or its buffer size) would see the dot at the start of a line.
fn long_line(n: usize) -> Vec<u8> {
    let mut v = b"\r\n".to_vec();
    v.extend(std::iter::repeat_n(b'x', n));
    v.extend_from_slice(b".\r\n");
    v
}

macro_rules! long_lines {
    ($($name:ident => $n:expr;)*) => {$(
        #[test]
        fn $name() {
            run_sequence(stringify!($name), &long_line($n), Mode::Plain);
        }
    )*};
}

long_lines! {
    long_line_998_dot_crlf => 998;
    long_line_999_dot_crlf => 999;
    long_line_1000_dot_crlf => 1000;
    long_line_1024_dot_crlf => 1024;
    long_line_4096_dot_crlf => 4096;
    long_line_8192_dot_crlf => 8192;
    long_line_65536_dot_crlf => 65536;
}

// ---- controls: what must keep working ----

/// Only CRLF line ends, dot-stuffed lines: delivered once, unstuffed, byte for byte.
#[test]
fn control_dot_stuffed_crlf_message_is_delivered_byte_exact() {
    let s = Setup::start(false);
    let mut w = open_transaction(&s, Mode::Plain, "control");
    let sent = b"From: <legit@example.org>\r\nSubject: control\r\n\r\n..leading dot\r\n...two dots\r\n..\r\n. \r\nMAIL FROM:<x@example.org>\r\nlast\r\n.\r\nQUIT\r\n";
    let want = b"From: <legit@example.org>\r\nSubject: control\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n \r\nMAIL FROM:<x@example.org>\r\nlast\r\n";
    w.send(sent);
    let replies = w.rest(WAIT);
    assert!(
        replies.len() == 2
            && replies[0].starts_with("250 2.0.0 OK queued")
            && replies[1].starts_with("221"),
        "{replies:?}\n{}",
        w.transcript
    );
    let got = s.settle(1);
    assert_eq!(got.len(), 1, "{}", summary(&got));
    assert!(got[0].mail_from.contains("=legit@"), "{}", got[0].mail_from);
    assert_bytes_eq(without_our_received(&got[0].data), want, "control body");
}

/// The same attack with the real `<CRLF>.<CRLF>` as the "fake" sequence is two honest
/// transactions: both queued and delivered. Shows the detection of a second message works.
#[test]
fn control_real_terminator_then_pipelined_transaction_is_two_messages() {
    let s = Setup::start(false);
    let mut w = open_transaction(&s, Mode::Plain, "control");
    let mut data = legit_part("real");
    data.extend_from_slice(b"\r\n.\r\n");
    data.extend_from_slice(&smuggled_part("real"));
    data.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    w.send(&data);
    let replies = w.rest(WAIT);
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3.min(r.len())]).collect();
    assert_eq!(
        codes,
        ["250", "250", "250", "354", "250", "221"],
        "{}",
        w.transcript
    );
    assert_eq!(queued(&replies), 2, "{replies:?}");
    let got = s.settle(2);
    assert_eq!(got.len(), 2, "{}", summary(&got));
    assert_eq!(
        got.iter().filter(|m| is_smuggled(m)).count(),
        1,
        "{}",
        summary(&got)
    );
}

/// CRLF pairs, the dot of a stuffed line and the terminator split over separate writes
/// (and so TCP segments): a CR at the end of one read is not a bare CR.
#[test]
fn control_crlf_split_across_writes_is_not_bare() {
    let s = Setup::start(false);
    let mut w = s.connect();
    let pause = || std::thread::sleep(Duration::from_millis(150));
    let step = |w: &mut Wire, parts: &[&[u8]]| {
        for p in parts {
            w.send(p);
            pause();
        }
        w.reply(WAIT).unwrap_or_default()
    };
    for (parts, want) in [
        (&[&b"EHLO attacker.example\r"[..], b"\n"][..], "250"),
        (&[&b"MAIL FROM:<legit@example.org>\r"[..], b"\n"], "250"),
        (
            &[&b"RCPT TO:<john@forward.example>"[..], b"\r", b"\n"],
            "250",
        ),
        (&[&b"DATA\r"[..], b"\n"], "354"),
        (
            &[
                &b"Subject: split\r"[..],
                b"\n\r",
                b"\nline one\r",
                b"\nline two\r\n.",
                b".stuffed\r\nlast\r\n",
                b".",
                b"\r",
                b"\n",
            ],
            "250 2.0.0 OK queued",
        ),
    ] {
        let r = step(&mut w, parts);
        assert!(r.starts_with(want), "{r:?}\n{}", w.transcript);
    }
    assert!(w.cmd("QUIT").starts_with("221"), "{}", w.transcript);
    let got = s.settle(1);
    assert_eq!(got.len(), 1, "{}", summary(&got));
    assert_bytes_eq(
        without_our_received(&got[0].data),
        b"Subject: split\r\n\r\nline one\r\nline two\r\n.stuffed\r\nlast\r\n",
        "split body",
    );
}

// ---- after a refusal ----

/// After the `550 5.5.2` for a bare LF (or CR) in DATA, commands sent after reading the
/// reply get no answer: the connection is closed, nothing is queued.
#[test]
fn after_bare_newline_refusal_the_connection_is_closed() {
    let s = Setup::start(false);
    for (name, text) in [
        ("bare LF", &b"line one\nline two"[..]),
        ("bare CR", b"line one\rline two"),
    ] {
        let mut w = open_transaction(&s, Mode::Plain, name);
        let mut data = b"Subject: x\r\n\r\n".to_vec();
        data.extend_from_slice(text);
        data.extend_from_slice(b"\r\n.\r\n");
        w.send(&data);
        let r = w.reply(WAIT).unwrap_or_default();
        assert!(
            r.starts_with("550 5.5.2"),
            "{name}: {r:?}\n{}",
            w.transcript
        );
        let mut more = smuggled_part(name.split(' ').nth(1).unwrap());
        more.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        w.send(&more);
        let rest = w.rest(WAIT);
        assert!(
            rest.is_empty() && w.closed,
            "{name}: after the 550 the connection must be closed without a reply; got {rest:?} (closed: {})\n{}",
            w.closed,
            w.transcript
        );
    }
    let got = s.settle(0);
    assert!(got.is_empty(), "{}", summary(&got));
    assert_eq!(s.relay.spooled(), 0);
}

// ---- command lines ----

/// A command line ends at CRLF only: `prelude` runs normally (each reply 2xx/3xx), then
/// `attack` (holding a bare LF or CR inside a command line) must get exactly one 5xx and a
/// closed connection; only the `legit` deliveries of the prelude arrive.
fn run_command_case(name: &str, prelude: &[&[u8]], attack: &[u8], legit: usize) {
    let s = Setup::start(false);
    let mut w = s.connect();
    for p in prelude {
        w.send(p);
        let r = w.reply(WAIT).unwrap_or_default();
        assert!(
            r.starts_with('2') || r.starts_with('3'),
            "{name}: prelude refused: {r:?}\n{}",
            w.transcript
        );
    }
    let mut wire = attack.to_vec();
    wire.extend_from_slice(b"QUIT\r\n");
    w.send(&wire);
    let replies = w.rest(WAIT);
    let mut problems = Vec::new();
    match replies.as_slice() {
        [r] if r.starts_with('5') => {}
        _ => problems.push(format!(
            "want exactly one 5xx reply to the line with the bare CR/LF; got {replies:?}"
        )),
    }
    if !w.closed {
        problems.push(format!("the connection is still open {WAIT:?} later"));
    }
    let got = s.settle(legit);
    if got.iter().any(is_smuggled) {
        problems.push(format!("a message from {SMUGGLED} was delivered"));
    }
    if got.len() != legit {
        problems.push(format!("{} message(s) delivered, want {legit}", got.len()));
    }
    if !problems.is_empty() {
        panic!(
            "command case {name} ({:?}):\n- {}\ntranscript:\n{}delivered:\n{}relay log (tail):\n{}",
            attack.escape_ascii().to_string(),
            problems.join("\n- "),
            w.transcript,
            summary(&got),
            s.log_tail()
        );
    }
}

const EHLO: &[u8] = b"EHLO attacker.example\r\n";

#[test]
fn command_mail_lf_rcpt_is_not_two_commands() {
    run_command_case(
        "mail_lf_rcpt",
        &[EHLO],
        b"MAIL FROM:<legit@example.org>\nRCPT TO:<john@forward.example>\r\n",
        0,
    );
}

#[test]
fn command_mail_cr_rcpt_is_not_two_commands() {
    run_command_case(
        "mail_cr_rcpt",
        &[EHLO],
        b"MAIL FROM:<legit@example.org>\rRCPT TO:<john@forward.example>\r\n",
        0,
    );
}

#[test]
fn command_ehlo_lf_mail_is_not_two_commands() {
    run_command_case(
        "ehlo_lf_mail",
        &[],
        b"EHLO attacker.example\nMAIL FROM:<smuggled@example.org>\r\n",
        0,
    );
}

#[test]
fn command_rcpt_lf_data_is_not_two_commands() {
    run_command_case(
        "rcpt_lf_data",
        &[EHLO, b"MAIL FROM:<legit@example.org>\r\n"],
        b"RCPT TO:<john@forward.example>\nDATA\r\n",
        0,
    );
}

#[test]
fn command_with_cr_before_crlf_is_refused() {
    run_command_case(
        "mail_cr_crlf",
        &[EHLO],
        b"MAIL FROM:<smuggled@example.org>\r\r\nRCPT TO:<john@forward.example>\r\n",
        0,
    );
}

#[test]
fn command_noop_lf_crlf_is_refused() {
    run_command_case(
        "noop_lf_crlf",
        &[EHLO],
        b"NOOP\n\r\nMAIL FROM:<smuggled@example.org>\r\n",
        0,
    );
}

/// After a real transaction, `RSET<LF>` then a whole pipelined smuggled transaction.
fn rset_case(name: &str, sep: &[u8]) {
    let legit = format!("From: <{LEGIT}>\r\nSubject: first\r\n\r\nfirst\r\n.\r\n");
    let mut attack = b"RSET".to_vec();
    attack.extend_from_slice(sep);
    attack.extend_from_slice(&smuggled_part(name));
    attack.extend_from_slice(b"\r\n.\r\n");
    run_command_case(
        name,
        &[
            EHLO,
            b"MAIL FROM:<legit@example.org>\r\n",
            b"RCPT TO:<john@forward.example>\r\n",
            b"DATA\r\n",
            legit.as_bytes(),
        ],
        &attack,
        1,
    );
}

#[test]
fn command_rset_lf_smuggled_transaction() {
    rset_case("rset_lf", b"\n");
}

#[test]
fn command_rset_cr_smuggled_transaction() {
    rset_case("rset_cr", b"\r");
}

// ---- STARTTLS ----

/// RFC 3207 §4.2 / CVE-2011-0411: plaintext pipelined after STARTTLS must not be run as
/// commands inside the TLS session (the server discards it, or refuses, or the handshake
/// fails on it: anything but a reply to it inside TLS).
#[test]
fn starttls_does_not_run_plaintext_pipelined_after_it() {
    let s = Setup::start(true);
    let mut w = s.connect();
    let ehlo = w.cmd("EHLO attacker.example");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    w.send(b"STARTTLS\r\nMAIL FROM:<smuggled@example.org>\r\nRCPT TO:<john@forward.example>\r\n");
    let r = w.reply(WAIT).unwrap_or_default();
    if !r.starts_with("220") {
        eprintln!("STARTTLS with pipelined commands refused: {r:?}");
        return; // nothing goes into TLS
    }
    // The handshake may fail if the server fed the plaintext to TLS: no injection then.
    if let Err(e) = w.upgrade() {
        eprintln!("handshake failed after pipelined plaintext: {e}");
        return;
    }
    // Nothing may come before we speak inside TLS.
    let early = w.rest(Duration::from_millis(700));
    assert!(
        early.is_empty(),
        "replies inside TLS to commands sent in the clear: {early:?}\n{}",
        w.transcript
    );
    let ehlo = w.cmd("EHLO attacker.example");
    assert!(
        ehlo.starts_with("250") && ehlo.contains("PIPELINING") && !ehlo.contains("STARTTLS"),
        "{ehlo:?}\n{}",
        w.transcript
    );
    // A transaction inside TLS starts clean: no sender or recipient carried over.
    assert!(
        w.cmd("RCPT TO:<john@forward.example>").starts_with("503"),
        "{}",
        w.transcript
    );
    assert!(w.cmd("DATA").starts_with("503"), "{}", w.transcript);
    assert!(w.cmd("QUIT").starts_with("221"), "{}", w.transcript);
    let got = s.settle(0);
    assert!(got.is_empty(), "{}", summary(&got));
}
