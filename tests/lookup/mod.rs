//! Harness for the Postfix lookup services: `srs-relay socketmap` started on loopback
//! ports picked at run time, and blocking socketmap and tcp_table clients. Every read is
//! bounded by a timeout; the server is killed when dropped, panics included.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use srs_relay::socketmap::netstring::{read_netstring, write_netstring};

pub const SECRET: &str = "tops3cr3t";
/// The SRS domain of every test (postsrsd's `-d`).
pub const DOMAIN: &str = "forward.example";

// The suite's one copy of these (tests/common).
#[path = "../common/mod.rs"]
pub mod common;
pub use common::{free_port, wait_until};

/// A running `srs-relay socketmap`: socketmap and tcp_table (forward, reverse) on their
/// own loopback ports, classic form, the suite's secret.
pub struct Lookups {
    pub dir: tempfile::TempDir,
    pub socketmap: u16,
    pub tcp_forward: u16,
    pub tcp_reverse: u16,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Lookups {
    /// `srs_extra` is added to `[srs]`, `socketmap_extra` to `[socketmap]`.
    pub fn start(srs_extra: &str, socketmap_extra: &str) -> Lookups {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secrets"), format!("{SECRET}\n")).unwrap();
        Self::start_in(dir, srs_extra, &[], socketmap_extra)
    }

    /// As [`start`](Self::start), in a directory that already holds `secrets`, with more
    /// `socketmap.listen` entries (`"unix:…"`) after the harness's TCP port.
    pub fn start_in(
        dir: tempfile::TempDir,
        srs_extra: &str,
        more_listen: &[&str],
        socketmap_extra: &str,
    ) -> Lookups {
        let (socketmap, tcp_forward, tcp_reverse) = (free_port(), free_port(), free_port());
        let config = dir.path().join("srs-relay.toml");
        let more: String = more_listen.iter().map(|l| format!(", \"{l}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "[srs]\nsecrets_file = \"secrets\"\nformat = \"classic\"\n\
                 default_domain = \"{DOMAIN}\"\n{srs_extra}\n\
                 [socketmap]\nlisten = [\"127.0.0.1:{socketmap}\"{more}]\n{socketmap_extra}\n\
                 [tcp_table]\nforward_listen = [\"127.0.0.1:{tcp_forward}\"]\n\
                 reverse_listen = [\"127.0.0.1:{tcp_reverse}\"]\n"
            ),
        )
        .unwrap();
        let mut l = Lookups {
            dir,
            socketmap,
            tcp_forward,
            tcp_reverse,
            config,
            child: None,
        };
        l.spawn();
        l
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args(["socketmap", "--config", self.config.to_str().unwrap()])
            // Tests run as root in CI: root is allowed here (see tests/privileges.rs).
            .env("SRS_RELAY__SERVER__ALLOW_ROOT", "true")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let ports = [self.socketmap, self.tcp_forward, self.tcp_reverse];
        assert!(
            wait_until(Duration::from_secs(20), || ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())),
            "srs-relay socketmap did not start listening; log:\n{}",
            self.log()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("socketmap.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The service's process id (it must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn secrets(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id(), "TERM");
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < end, "srs-relay socketmap ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socketmap_client(&self) -> SocketmapClient<TcpStream> {
        SocketmapClient::tcp(self.socketmap)
    }
}

impl Drop for Lookups {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// A blocking socketmap client, one request at a time, as Postfix talks.
pub struct SocketmapClient<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl SocketmapClient<TcpStream> {
    pub fn tcp(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        SocketmapClient {
            stream: s,
            buf: Vec::new(),
        }
    }
}

impl SocketmapClient<std::os::unix::net::UnixStream> {
    pub fn unix(path: &Path) -> Self {
        let s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        SocketmapClient {
            stream: s,
            buf: Vec::new(),
        }
    }
}

impl<S: Read + Write> SocketmapClient<S> {
    /// Sends `<map> <key>` and returns the reply's payload.
    pub fn query(&mut self, map: &str, key: &str) -> String {
        let mut req = Vec::new();
        write_netstring(&mut req, format!("{map} {key}").as_bytes());
        self.send(&req);
        self.reply().expect("a reply")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next reply's payload, or `None` if the server closed the connection first.
    pub fn reply(&mut self) -> Option<String> {
        loop {
            if let Some((payload, used)) = read_netstring(&self.buf, 100_000).unwrap() {
                let text = String::from_utf8(payload.to_vec()).unwrap();
                self.buf.drain(..used);
                return Some(text);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading a socketmap reply: {e}"),
            }
        }
    }

    /// Whether the server closed the connection (EOF with nothing more), within the read
    /// timeout.
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && at_eof(&mut self.stream)
    }
}

/// A blocking tcp_table client.
pub struct TcpTableClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpTableClient {
    pub fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        TcpTableClient {
            stream: s,
            buf: Vec::new(),
        }
    }

    /// `get <key>` (URL-encoded as Postfix does), returning the reply line, decoded when
    /// it is a 200.
    pub fn get(&mut self, key: &str) -> String {
        let mut req = b"get ".to_vec();
        srs_relay::socketmap::tcp_table::url_encode_into(&mut req, key.as_bytes());
        req.push(b'\n');
        self.send(&req);
        let line = self.line().expect("a reply line");
        match line.strip_prefix("200 ") {
            Some(data) => format!(
                "200 {}",
                String::from_utf8(
                    srs_relay::socketmap::tcp_table::url_decode(data.as_bytes()).unwrap()
                )
                .unwrap()
            ),
            None => line,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next reply line without its newline, or `None` at EOF.
    pub fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                self.buf.drain(..=end);
                return Some(line);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading a tcp_table reply: {e}"),
            }
        }
    }

    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && at_eof(&mut self.stream)
    }
}

/// EOF, or a reset: a server that closes with our unread input in its buffer resets the
/// connection. A timeout is not a close.
fn at_eof(stream: &mut impl Read) -> bool {
    let mut chunk = [0u8; 64];
    match stream.read(&mut chunk) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}
