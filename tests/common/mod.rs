//! Shared harness for end-to-end tests: the real `srs-relay` binary started on loopback
//! ports picked at run time, a scriptable SMTP receiver that records envelopes and bodies
//! byte for byte, and swaks. Every wait is bounded.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod mailauth;
pub mod postgres;

pub const SECRET: &str = "test-secret-for-the-suite";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// xorshift64*: campaigns take their moments from a printed seed, so a run can be
/// repeated.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// The number in the environment variable `name`, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
        Err(_) => default,
    }
}

/// A seed from the environment variable `name`, else from the clock (never 0).
pub fn seed_from_env(name: &str) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    env_u64(name, clock) | 1
}

/// A running `srs-relay serve` with its own directory, config, secrets and aliases.
pub struct Relay {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    /// Command line put in front of the relay's (e.g. `unshare ... sh -c '... exec "$@"'`);
    /// it must end up exec'ing the relay, so that the child's pid is the relay's.
    pub wrapper: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Relay {
    /// `extra` is TOML appended to the base configuration (sections may be repeated by
    /// writing them in full in `extra` instead: the base only sets what tests share).
    pub fn start(extra: &str) -> Relay {
        Self::start_with(extra, "[relay]\naliases_file = \"aliases\"\n")
    }

    /// Extra keys for `[server]`, `[relay]` (the aliases file is always set) and
    /// further sections.
    pub fn start_full(server_extra: &str, relay_extra: &str, extra: &str) -> Relay {
        Self::start_inner(
            server_extra,
            &format!("[relay]\naliases_file = \"aliases\"\n{relay_extra}"),
            extra,
        )
    }

    pub fn start_with(extra: &str, relay_section: &str) -> Relay {
        Self::start_inner("", relay_section, extra)
    }

    fn start_inner(server_extra: &str, relay_section: &str, extra: &str) -> Relay {
        let mut r = Self::prepare(server_extra, relay_section, extra);
        r.spawn();
        r
    }

    /// Like [`Relay::start_full`], but not started yet: set `wrapper` or prepare the
    /// directory, then [`Relay::spawn`].
    pub fn prepare_full(server_extra: &str, relay_extra: &str, extra: &str) -> Relay {
        Self::prepare(
            server_extra,
            &format!("[relay]\naliases_file = \"aliases\"\n{relay_extra}"),
            extra,
        )
    }

    fn prepare(server_extra: &str, relay_section: &str, extra: &str) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("secrets"), format!("{SECRET}\n")).unwrap();
        std::fs::write(
            dir.path().join("aliases"),
            "john@forward.example: john@home.example\nteam@forward.example: a@home.example, b@home.example\n",
        )
        .unwrap();
        let config = dir.path().join("srs-relay.toml");
        // The admin listener's default port would be shared by every test's relay: off,
        // unless the test configures it.
        let admin = if extra.contains("[admin]") {
            ""
        } else {
            "[admin]\nlisten = \"\"\n"
        };
        let text = format!(
            "[srs]\nsecrets_file = \"secrets\"\nlocal_domains = [\"forward.example\"]\ndefault_domain = \"forward.example\"\n\n\
             [server]\nlisten = [\"127.0.0.1:{port}\"]\nhostname = \"relay.test\"\n{server_extra}\n\
             [spool]\ndir = \"spool\"\n\n{relay_section}\n{admin}{extra}\n"
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("relay.log");
        Relay {
            dir,
            port,
            config,
            wrapper: Vec::new(),
            child: None,
            log,
        }
    }

    /// Starts the relay and waits until it listens. Ports are picked free but not
    /// reserved: if another test took this one meanwhile, the relay is started again on
    /// a new one. If the spool is locked by `srs-relay queue` acting on it while the relay
    /// was down, the relay exits; it is started again once the command is done (as
    /// systemd's `Restart=on-failure` would).
    pub fn spawn(&mut self) {
        let (mut ports, mut locked) = (0, 0);
        loop {
            match self.spawn_once() {
                Spawned::Up => return,
                Spawned::PortTaken if ports < 4 => {
                    ports += 1;
                    let port = free_port();
                    let cfg = std::fs::read_to_string(&self.config).unwrap();
                    let cfg = cfg.replace(
                        &format!("listen = [\"127.0.0.1:{}\"]", self.port),
                        &format!("listen = [\"127.0.0.1:{port}\"]"),
                    );
                    std::fs::write(&self.config, cfg).unwrap();
                    self.port = port;
                }
                Spawned::SpoolLocked if locked < 100 => {
                    locked += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => panic!("relay could not start; log:\n{}", self.log()),
            }
        }
    }

    fn spawn_once(&mut self) -> Spawned {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let log_start = log.metadata().unwrap().len() as usize;
        let bin = env!("CARGO_BIN_EXE_srs-relay");
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(["serve", "--config", self.config.to_str().unwrap()])
            // Tests run as root in CI: root is allowed here (see tests/privileges.rs).
            .env("SRS_RELAY__SERVER__ALLOW_ROOT", "true")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // The line as text, or as JSON (`log.format = "json"`).
        let listening = format!("listening listen=127.0.0.1:{}", self.port);
        let listening_json = format!("\"listen\":\"127.0.0.1:{}\"", self.port);
        let new_log = |r: &Relay| r.log().get(log_start..).unwrap_or_default().to_owned();
        let mut exited = false;
        let up = wait_until(Duration::from_secs(20), || {
            exited = !self.is_running();
            let log = new_log(self);
            exited || log.contains(&listening) || log.contains(&listening_json)
        });
        if exited && new_log(self).contains("Address already in use") {
            return Spawned::PortTaken;
        }
        if exited && new_log(self).contains("is already open (locked)") {
            return Spawned::SpoolLocked;
        }
        assert!(
            up && !exited,
            "relay did not start listening; log:\n{}",
            self.log()
        );
        Spawned::Up
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The relay's process id (it must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// True while the relay process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The relay's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe_kill(c.id(), 15);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < end, "relay ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Messages in the spool: its queue files (`queue/<id>.q`, see src/spool/mod.rs).
    /// Panics if the queue directory cannot be read, so a wrong path cannot pass for 0.
    pub fn spooled(&self) -> usize {
        let queue = self.dir.path().join("spool/queue");
        std::fs::read_dir(&queue)
            .unwrap_or_else(|e| panic!("{}: {e}", queue.display()))
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "q"))
            .count()
    }

    pub fn reverse(&self, address: &str) -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args([
                "reverse",
                "--secrets-file",
                self.dir.path().join("secrets").to_str().unwrap(),
                address,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "reverse {address}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }
}

/// How one start of the relay went.
enum Spawned {
    Up,
    /// Its port was taken meanwhile.
    PortTaken,
    /// Another process (`srs-relay queue` with the relay stopped) had the spool.
    SpoolLocked,
}

/// VmRSS of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a receiver got in one transaction.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
    /// DATA as it came over the wire: still dot-stuffed, with the final `.` line.
    pub raw: Vec<u8>,
    pub tls: bool,
    /// When the receiver read the transaction's MAIL FROM.
    pub mail_at: Instant,
    /// When the receiver took the message (after the final dot, before its reply).
    pub at: Instant,
}

/// How the receiver answers.
#[derive(Clone)]
pub struct Script {
    /// Reply to RCPT for addresses containing the key (else 250).
    pub rcpt: HashMap<String, String>,
    /// Reply after the final dot (default 250).
    pub data: String,
    /// The next this many transactions lose their connection in the middle of DATA: the
    /// receiver reads `cut_data_after` octets of the message, then closes (no reply).
    pub cut_data: usize,
    pub cut_data_after: usize,
    /// Advertise DSN in EHLO (RCPT parameters are accepted either way).
    pub dsn: bool,
    /// Wait this long before the reply after the final dot.
    pub data_delay: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            rcpt: HashMap::new(),
            data: "250 2.0.0 queued".into(),
            cut_data: 0,
            cut_data_after: 100,
            dsn: false,
            data_delay: Duration::ZERO,
        }
    }
}

/// A minimal SMTP receiver on a loopback port: records everything, byte for byte
/// (undoing dot-stuffing only), answers as scripted.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_on(0)
    }

    pub fn start_on(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, st) = (got.clone(), script.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (g, s) = (g.clone(), s.clone());
                        std::thread::spawn(move || {
                            let _ = serve_one(conn, g, s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            port,
            got,
            script,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_one(
    conn: TcpStream,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    w.write_all(b"220 receiver.test ESMTP\r\n")?;
    let mut cur = Received {
        mail_from: String::new(),
        rcpt_to: Vec::new(),
        data: Vec::new(),
        raw: Vec::new(),
        tls: false,
        mail_at: Instant::now(),
        at: Instant::now(),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            if script.lock().unwrap().dsn {
                w.write_all(b"250-receiver.test\r\n250-DSN\r\n")?;
            }
            w.write_all(
                b"250-receiver.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            )?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 receiver.test\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            cur = Received {
                mail_from: angle(&line[10..]),
                rcpt_to: Vec::new(),
                data: Vec::new(),
                raw: Vec::new(),
                tls: false,
                mail_at: Instant::now(),
                at: Instant::now(),
            };
            w.write_all(b"250 2.1.0 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            let a = angle(&line[8..]);
            let reply = {
                let s = script.lock().unwrap();
                s.rcpt
                    .iter()
                    .find(|(k, _)| a.contains(k.as_str()))
                    .map(|(_, v)| v.clone())
            };
            match reply {
                Some(rep) => w.write_all(format!("{rep}\r\n").as_bytes())?,
                None => {
                    cur.rcpt_to.push(a);
                    w.write_all(b"250 2.1.5 ok\r\n")?;
                }
            }
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 go\r\n")?;
            let cut_after = {
                let mut s = script.lock().unwrap();
                (s.cut_data > 0).then(|| {
                    s.cut_data -= 1;
                    s.cut_data_after
                })
            };
            if let Some(n) = cut_after {
                // Part of the message, then the connection is gone: no reply.
                let mut part = vec![0u8; n];
                let _ = r.read_exact(&mut part);
                let _ = w.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            let mut data = Vec::new();
            let mut raw = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                raw.extend_from_slice(&l);
                if l == b".\r\n" {
                    break;
                }
                if l.first() == Some(&b'.') {
                    l.remove(0);
                }
                data.extend_from_slice(&l);
            }
            cur.data = data;
            cur.raw = raw;
            let (reply, delay) = {
                let s = script.lock().unwrap();
                (s.data.clone(), s.data_delay)
            };
            std::thread::sleep(delay);
            if reply.starts_with('2') {
                cur.at = Instant::now();
                got.lock().unwrap().push(cur.clone());
            }
            w.write_all(format!("{reply}\r\n").as_bytes())?;
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            w.write_all(b"250 ok\r\n")?;
        } else {
            w.write_all(b"502 5.5.1 no\r\n")?;
        }
    }
}

fn angle(s: &str) -> String {
    let s = s.trim();
    let start = s.find('<').map(|i| i + 1).unwrap_or(0);
    let end = s[start..].find('>').map(|i| i + start).unwrap_or(s.len());
    s[start..end].to_owned()
}

/// Runs swaks; returns its output (the transcript is on stdout).
pub fn swaks(args: &[&str]) -> Output {
    Command::new("swaks")
        .args(args)
        .output()
        .expect("swaks is installed by scripts/test.sh")
}

pub fn swaks_ok(args: &[&str]) -> String {
    let o = swaks(args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "swaks failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A raw SMTP client for tests that need to misbehave.
pub struct Client {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let w = s.try_clone().unwrap();
        let mut c = Client {
            r: BufReader::new(s),
            w,
        };
        let greeting = c.reply();
        assert!(greeting.starts_with("220"), "{greeting}");
        c
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Reads until EOF (the server closed), bounded by the read timeout.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        let _ = self.r.read_to_string(&mut s);
        s
    }
}

pub fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

pub fn socket(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

/// Byte equality with a readable failure: lengths and the first difference.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let show = |b: &[u8]| {
            String::from_utf8_lossy(&b[at.saturating_sub(20)..(at + 20).min(b.len())]).into_owned()
        };
        panic!(
            "{what}: {} octets vs {} expected; first difference at {at}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            show(got),
            show(want)
        );
    }
}

/// An SMTP client that reports I/O errors instead of panicking: for load that runs while
/// the relay is killed under it.
pub struct Session {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Session {
    /// Connects and reads the greeting; `Err` unless it is a 220.
    pub fn open(addr: &str, timeout: Duration) -> std::io::Result<Session> {
        let s = TcpStream::connect_timeout(&socket(addr), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let w = s.try_clone()?;
        let mut c = Session {
            r: BufReader::new(s),
            w,
        };
        let greeting = c.reply()?;
        if !greeting.starts_with("220") {
            return Err(std::io::Error::other(format!("greeting: {greeting}")));
        }
        c.cmd("EHLO client.test")?;
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply; EOF is an error.
    pub fn reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> std::io::Result<String> {
        self.w.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// One transaction: see [`Outcome`]. `Err` if the connection failed before the final
    /// dot could go out (so the message cannot have been accepted).
    pub fn send(&mut self, from: &str, to: &str, message: &[u8]) -> std::io::Result<Outcome> {
        for (cmd, want) in [
            (format!("MAIL FROM:<{from}>"), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_owned(), "354"),
        ] {
            let r = self.cmd(&cmd)?;
            if !r.starts_with(want) {
                if want == "354" || cmd.starts_with("RCPT") {
                    self.cmd("RSET")?;
                }
                return Ok(Outcome::NotSent(r));
            }
        }
        self.w.write_all(&dot_stuff(message))?;
        // From here on the server may have the whole message.
        let reply = self.w.write_all(b".\r\n").and_then(|()| self.reply());
        Ok(reply.map_or(Outcome::NoReply, Outcome::Reply))
    }

    pub fn quit(mut self) {
        let _ = self.cmd("QUIT");
    }
}

/// What [`Session::send`] got.
#[derive(Debug)]
pub enum Outcome {
    /// The reply to the final dot.
    Reply(String),
    /// The connection failed while the final dot went out or before its reply came:
    /// the message may or may not have been accepted.
    NoReply,
    /// MAIL, RCPT or DATA was refused with this reply: no message went out.
    NotSent(String),
}

/// `message` as it goes on the wire before the final dot: dot-stuffed, ending in CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A test message named `id` (in its Message-ID and Subject) of about `size` octets;
/// its content derives from `id`, so the receiving end can check it byte for byte.
pub fn numbered_message(id: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "Message-ID: <{id}@test.example>\r\nSubject: {id}\r\nFrom: <sender@sender.example>\r\nTo: <john@forward.example>\r\n\r\n"
    )
    .into_bytes();
    let line = format!("{id} 0123456789 abcdefghijklmnopqrstuvwxyz\r\n");
    while m.len() < size {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

/// The id in the `Message-ID: <id@...>` header of `data`.
pub fn message_id(data: &[u8]) -> Option<String> {
    let start = data
        .windows(13)
        .position(|w| w.eq_ignore_ascii_case(b"message-id: <"))?
        + 13;
    let end = data[start..].iter().position(|&b| b == b'@')? + start;
    Some(String::from_utf8_lossy(&data[start..end]).into_owned())
}

/// `data` without the Received header srs-relay puts on top (with its folded lines).
pub fn without_our_received(data: &[u8]) -> &[u8] {
    if !data.starts_with(b"Received: ") {
        return data;
    }
    let mut i = 0;
    while let Some(end) = data[i..].windows(2).position(|w| w == b"\r\n") {
        i += end + 2;
        if !matches!(data.get(i), Some(b'\t' | b' ')) {
            break;
        }
    }
    &data[i..]
}

/// A TLS client for tests: the given versions, any server certificate accepted.
pub fn tls_client_trusting_any(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// This process's effective uid (root runs the tests in CI).
pub fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uid.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// One HTTP/1.1 exchange with the relay's admin listener on `port`: `method path`, extra
/// header lines (each ending in CRLF) and a body. Returns the status, the response head
/// and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .unwrap();
    // The body by its Content-Length when there is one (a server may keep the
    // connection open), else to the end.
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        }
        None => {
            r.read_to_end(&mut body).unwrap();
        }
    }
    let head = head.trim_end().to_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Sends one message with swaks from `from` to `to` with `subject`; returns the queue id
/// of the relay's `250`.
#[allow(dead_code)]
pub fn send_queued(relay: &Relay, from: &str, to: &str, subject: &str) -> String {
    let out = swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        from,
        "--to",
        to,
        "--header",
        &format!("Subject: {subject}"),
    ]);
    out.lines()
        .find_map(|l| l.split("queued as ").nth(1))
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|| panic!("no queue id in:\n{out}"))
}
