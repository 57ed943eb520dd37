//! Client bytes into the inbound SMTP path, as the server runs it: the real session (line
//! reader, smtp-proto `Request::parse`, the state machine, relay policy, SRS rewriting,
//! DATA framing, the spool) over an in-memory stream, and the DATA reader on its own
//! against a model of RFC 5321 framing.
//!
//! Input: byte 0 picks the server setup, byte 1 how the bytes are cut into reads (TCP may
//! deliver any split), the rest is what the client sends.
//!
//! Checked besides "no panic, no hang":
//! * every reply line is `NNN[ -]text` with CRLF and no other CR or LF in it;
//! * every spooled message is free of NUL, bare CR and bare LF (the body was checked, so this
//!   holds our own `Received:` header, which quotes HELO and RCPT, to the same rule);
//! * no more messages are accepted (`250 ... queued as`) than the input holds real
//!   `<CRLF>.<CRLF>` sequences before its first bare CR or LF, and every id in those
//!   replies was spooled: a fake end of data never lets a second transaction through
//!   (SMTP smuggling);
//! * from an untrusted client, only alias recipients are ever spooled (no open relay);
//! * the DATA reader, fed the input alone, gives what RFC 5321 framing says, whatever the
//!   read sizes: the message up to the first `<CRLF>.<CRLF>`, unstuffed, or a refusal
//!   for a bare CR or LF before it.
#![no_main]

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use srs_relay::config::Config;
use srs_relay::fuzzing;
use srs_relay::policy::Policy;
use srs_relay::smtp::Server;
use srs_relay::smtp::io::DataError;
use srs_relay::spool::{Envelope, Spool};
use srs_relay::srs::Srs;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Read sizes a client's bytes may arrive in (`0` = all at once).
const CHUNKS: [usize; 8] = [0, 1, 2, 3, 7, 64, 512, 4096];
const ALIASES: &str = "john@forward.example: john@home.example\nteam@forward.example: a@home.example, b@home.example\n";

struct Setup {
    server: Server,
    peer: SocketAddr,
    /// The session runs as if STARTTLS already happened.
    tls: Option<String>,
}

struct World {
    rt: Runtime,
    setups: Vec<Setup>,
    // Kept alive: a dropped sender would make every session's shutdown branch fire.
    _stop: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

/// (extra TOML, peer, trusted, already under TLS). Small limits so that the fuzzer reaches
/// every limit with short inputs.
const SETUPS: [(&str, &str, bool, bool); 4] = [
    ("", "192.0.2.1:4000", false, false),
    (
        "[server]\nmax_message_size = 300\nmax_recipients = 3\nmax_errors = 5\nmax_line_length = 512\n\
         [relay]\ntrusted_networks = [\"127.0.0.0/8\"]\nmax_received_headers = 2\n",
        "127.0.0.1:4000",
        true,
        false,
    ),
    (
        "[srs]\nformat = \"classic\"\n[relay]\ntrusted_networks = [\"10.0.0.0/8\"]\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        "[::ffff:10.0.0.1]:4000",
        true,
        false,
    ),
    (
        "[server]\nmax_errors = 1000\n[tls]\nrequire = true\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        "[2001:db8::1]:4000",
        false,
        true,
    ),
];

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        // tmpfs where there is one: the spool fsyncs every message.
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("srs-relay-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("aliases"), ALIASES).unwrap();
        srs_relay::tls::generate_self_signed("relay.fuzz", &dir).unwrap();
        let (spool, _) = Spool::open(&dir.join("spool")).unwrap();
        let spool = Arc::new(spool);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // One embedded sender store for every setup: the stored form is exercised too.
        let store = rt
            .block_on(srs_relay::sender_store::SenderStore::open(
                "senders.redb",
                &dir,
            ))
            .unwrap();
        let setups = SETUPS
            .iter()
            .enumerate()
            .map(|(i, (extra, peer, trusted, tls))| {
                let path = dir.join(format!("setup{i}.toml"));
                let text = format!(
                    "[srs]\nsecrets_file = \"secrets\"\nlocal_domains = [\"forward.example\"]\n\
                     default_domain = \"forward.example\"\n\
                     [server]\nhostname = \"relay.fuzz\"\n[relay]\naliases_file = \"aliases\"\n{extra}"
                );
                // Later tables of the same name are merged by hand: TOML forbids repeats.
                std::fs::write(&path, merge_tables(&text)).unwrap();
                let cfg = Config::load(Some(&path)).unwrap();
                let srs = Srs::new(&[b"fuzz secret"], cfg.srs.options().unwrap()).unwrap();
                let policy = Policy::from_config(&cfg).unwrap();
                let acceptor = match (&cfg.tls.cert, &cfg.tls.key) {
                    (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(
                        srs_relay::tls::server_config(&cfg.resolve(c), &cfg.resolve(k)).unwrap(),
                    )),
                    _ => None,
                };
                let on_spooled = check_spooled(spool.clone(), *trusted);
                let server =
                    Server::new(&cfg, srs, policy, spool.clone(), store.clone(), acceptor, on_spooled)
                        .unwrap();
                Setup {
                    server,
                    peer: peer.parse().unwrap(),
                    tls: tls.then(|| "TLSv1.3 TLS13_AES_256_GCM_SHA384".to_owned()),
                }
            })
            .collect();
        let (stop, stop_rx) = watch::channel(false);
        World {
            rt,
            setups,
            _stop: stop,
            stop_rx,
        }
    })
}

/// Joins repeated `[table]` sections into the first one of that name.
fn merge_tables(text: &str) -> String {
    let mut order: Vec<(String, Vec<String>)> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            if !order.iter().any(|(n, _)| *n == current) {
                order.push((current.clone(), Vec::new()));
            }
        } else if let Some((_, lines)) = order.iter_mut().find(|(n, _)| *n == current) {
            lines.push(line.to_owned());
        }
    }
    order
        .into_iter()
        .map(|(n, lines)| format!("[{n}]\n{}\n", lines.join("\n")))
        .collect()
}

/// Envelopes spooled during the current input.
static SPOOLED: AtomicUsize = AtomicUsize::new(0);

/// The checks on each message the session spools; then it is removed, so the spool stays
/// small however long the run.
fn check_spooled(spool: Arc<Spool>, trusted: bool) -> Arc<dyn Fn(Envelope) + Send + Sync> {
    Arc::new(move |env: Envelope| {
        let message = spool.read_message(&env.id).unwrap();
        assert!(message.starts_with(b"Received: from "));
        assert!(!message.contains(&0), "NUL spooled");
        for (i, &b) in message.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(message.get(i + 1), Some(&b'\n'), "bare CR spooled"),
                b'\n' => assert!(i > 0 && message[i - 1] == b'\r', "bare LF spooled"),
                _ => {}
            }
        }
        if !trusted {
            for r in &env.recipients {
                let key = r.original.to_ascii_lowercase();
                assert!(
                    ALIASES.lines().any(|l| l.starts_with(&format!("{key}:"))),
                    "relayed for an untrusted client: {r:?}"
                );
            }
        }
        spool.remove(&env.id).unwrap();
        SPOOLED.fetch_add(1, Ordering::Relaxed);
    })
}

/// The client's side of the connection: reads come `chunk` octets at a time, writes are
/// kept for the checks.
struct Wire<'a> {
    input: &'a [u8],
    chunk: usize,
    output: &'a mut Vec<u8>,
}

impl AsyncRead for Wire<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let limit = if self.chunk == 0 {
            usize::MAX
        } else {
            self.chunk
        };
        let n = self.input.len().min(buf.remaining()).min(limit);
        buf.put_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn check_replies(output: &[u8]) {
    if output.is_empty() {
        return;
    }
    assert!(output.ends_with(b"\r\n"), "reply not ended by CRLF");
    for line in output[..output.len() - 1].split(|&b| b == b'\n') {
        let line = line
            .strip_suffix(b"\r")
            .expect("reply line ended by a bare LF");
        assert!(!line.contains(&b'\r'), "bare CR in a reply: {line:?}");
        assert!(
            line.len() >= 3
                && line[..3].iter().all(u8::is_ascii_digit)
                && matches!(line.get(3), None | Some(b' ' | b'-')),
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// What RFC 5321 says DATA holds (§4.1.1.4, §4.5.2, §2.3.8), written from the RFC and
/// not from the reader: the data ends at the first `<CRLF>.<CRLF>`, counting the CRLF
/// that ended the DATA command; before it, CR and LF only come as CRLF, and a line's
/// leading `.` is removed.
#[derive(Debug, PartialEq)]
enum Framed {
    /// A bare CR or LF before the end: the reader must refuse and stop.
    BareLineEnd,
    /// No end in the input (and nothing bare): the reader waits for more.
    Unfinished,
    Message {
        unstuffed: Vec<u8>,
        received_headers: usize,
        /// Holds a NUL (not 8bit data, RFC 2045 §2.8): to be refused.
        nul: bool,
    },
}

fn data_model(input: &[u8]) -> Framed {
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(input);
    let end = framed.windows(5).position(|w| w == b"\r\n.\r\n");
    // The message, with the CRLF before the dot line.
    let scope = match end {
        Some(e) => &framed[2..e + 2],
        // A CR as the very last octet may yet be followed by its LF.
        None => framed[2..].strip_suffix(b"\r").unwrap_or(&framed[2..]),
    };
    let bare = scope.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => scope.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || scope[i - 1] != b'\r',
        _ => false,
    });
    if bare {
        return Framed::BareLineEnd;
    }
    if end.is_none() {
        return Framed::Unfinished;
    }
    let mut unstuffed = Vec::new();
    let mut received_headers = 0;
    let mut in_headers = true;
    for line in scope.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_prefix(b".").unwrap_or(line);
        if in_headers {
            if line == b"\r\n" {
                in_headers = false;
            } else if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
                received_headers += 1;
            }
        }
        unstuffed.extend_from_slice(line);
    }
    Framed::Message {
        nul: unstuffed.contains(&0),
        unstuffed,
        received_headers,
    }
}

fn check_data(rt: &Runtime, input: &[u8], selector: u8) {
    let max_size = [u64::MAX, 16, 200][usize::from(selector % 3)];
    let chunk = CHUNKS[usize::from(selector / 3) % CHUNKS.len()];
    let buffer = [16 * 1024, 1, 4, 13][usize::from(selector / 24) % 4];
    let mut sink = Vec::new();
    let wire = Wire {
        input,
        chunk,
        output: &mut sink,
    };
    let mut reader = BufReader::with_capacity(buffer, wire);
    let mut out = Vec::new();
    let got = rt.block_on(fuzzing::read_data(
        &mut reader,
        &mut out,
        max_size,
        Duration::from_secs(60),
    ));
    match (data_model(input), got) {
        (Framed::BareLineEnd, Err(DataError::BareLineEnd { .. })) => {}
        (Framed::Unfinished, Err(DataError::Eof)) => {}
        (
            Framed::Message {
                unstuffed,
                received_headers,
                nul,
            },
            Ok(report),
        ) => {
            assert_eq!(report.received_headers, received_headers, "Received: count");
            assert_eq!(report.nul, nul, "NUL");
            if unstuffed.len() as u64 > max_size {
                assert!(report.too_big, "over the size limit, not reported");
                assert!(out.len() as u64 <= max_size && unstuffed.starts_with(&out));
            } else {
                assert!(!report.too_big);
                assert_eq!(out, unstuffed, "message differs from RFC 5321 framing");
            }
            assert_eq!(report.size, out.len() as u64);
        }
        (want, got) => panic!("DATA reader: RFC framing says {want:?}, reader gave {got:?}"),
    }
}

/// Real ends of data in what the client sent before its first bare CR or LF: at most
/// this many messages can be accepted, whatever the commands around them (the CRLF may
/// be the DATA command's own). Nothing after a bare line end may be accepted: only CRLF
/// ends a line, so from there on client and server no longer agree on what is a command.
fn real_terminators(client: &[u8]) -> usize {
    let bare = client.iter().enumerate().position(|(i, &b)| match b {
        b'\r' => client.get(i + 1).is_some_and(|&n| n != b'\n'),
        b'\n' => i == 0 || client[i - 1] != b'\r',
        _ => false,
    });
    let before = &client[..bare.unwrap_or(client.len())];
    before.windows(5).filter(|w| *w == b"\r\n.\r\n").count()
}

/// `250 2.0.0 OK queued as a,b`: the ids of each accepted message.
fn queued_ids(output: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(output)
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("250 2.0.0 OK queued as "))
        .map(|ids| ids.split(',').map(str::to_owned).collect())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [setup, cut, client @ ..] = data else {
        return;
    };
    let w = world();
    let s = &w.setups[usize::from(*setup) % w.setups.len()];
    let mut output = Vec::new();
    let wire = Wire {
        input: client,
        chunk: CHUNKS[usize::from(*cut) % CHUNKS.len()],
        output: &mut output,
    };
    let starttls = w.rt.block_on(fuzzing::smtp_session(
        &s.server,
        wire,
        s.peer,
        s.tls.clone(),
        w.stop_rx.clone(),
    ));
    check_replies(&output);
    let accepted = queued_ids(&output);
    assert!(
        accepted.len() <= real_terminators(client),
        "{} messages accepted from {} real <CRLF>.<CRLF>",
        accepted.len(),
        real_terminators(client)
    );
    let spooled = SPOOLED.swap(0, Ordering::Relaxed);
    assert_eq!(
        spooled,
        accepted.iter().map(Vec::len).sum::<usize>(),
        "spooled envelopes and queued ids differ"
    );
    if starttls {
        // Only offered in plain text, and the last reply is the go-ahead.
        assert!(s.tls.is_none() && s.server.settings().tls.is_some());
        assert!(output.ends_with(b"220 2.0.0 Ready to start TLS\r\n"));
    }
    check_data(&w.rt, client, *cut);
});
