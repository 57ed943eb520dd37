//! srs-relay as Postfix's SRS service, with a real Postfix: a private instance (its own
//! configuration, queue and data directories in a temporary directory; loopback ports
//! picked at run time, never port 25) asks srs-relay's socketmap for
//! `sender_canonical_maps` and `recipient_canonical_maps` and relays to the test harness's
//! recording receiver. Mail sent through it with swaks must arrive with an SRS envelope
//! sender and an untouched header From:; a bounce to that SRS address must arrive at the
//! original sender; a forged bounce must not arrive at all.
//!
//! Postfix's master runs as root (`postfix -c DIR start`), so this test needs root. It is
//! stopped when the test ends, panics included.

mod lookup;

use lookup::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Receiver, swaks};
use lookup::{DOMAIN, Lookups, wait_until};

const POSTFIX: &str = "/usr/sbin/postfix";

/// A private Postfix instance.
struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postfix {
    /// `maps` is the socketmap endpoint, e.g. `inet:127.0.0.1:10003` or `unix:srs`.
    fn start(maps: &str, relayhost_port: u16) -> Postfix {
        assert!(
            Path::new(POSTFIX).exists(),
            "{POSTFIX} is missing: this test needs Postfix \
             (Debian/Ubuntu: apt-get install postfix; scripts/test.sh installs it)"
        );
        // The owner of /proc/self is this process's effective user.
        let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        assert_eq!(
            euid, 0,
            "this test starts a private Postfix instance, whose master must run as root"
        );
        let dir = tempfile::tempdir().unwrap();
        // Postfix's daemons run as the postfix user and must reach the queue below this.
        set_mode(dir.path(), 0o755);
        let conf = dir.path().join("etc");
        let data = dir.path().join("data");
        for d in [&conf, &data, &dir.path().join("queue")] {
            std::fs::create_dir(d).unwrap();
        }
        chown_postfix(&data);
        let port = lookup::free_port();
        let root = dir.path().display();
        std::fs::write(
            conf.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {root}/queue\n\
                 data_directory = {root}/data\n\
                 maillog_file = {root}/maillog\n\
                 maillog_file_prefixes = {root}\n\
                 myhostname = postfix.test\n\
                 mydomain = postfix.test\n\
                 myorigin = postfix.test\n\
                 mydestination = {DOMAIN}\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 relayhost = [127.0.0.1]:{relayhost_port}\n\
                 smtp_tls_security_level = none\n\
                 smtpd_tls_security_level = none\n\
                 smtputf8_enable = no\n\
                 alias_maps =\n\
                 alias_database =\n\
                 biff = no\n\
                 sender_canonical_maps = socketmap:{maps}:forward\n\
                 sender_canonical_classes = envelope_sender\n\
                 recipient_canonical_maps = socketmap:{maps}:reverse\n\
                 recipient_canonical_classes = envelope_recipient,header_recipient\n"
            ),
        )
        .unwrap();
        // Debian's services, none chrooted (no chroot to populate), smtpd on our port only.
        std::fs::write(
            conf.join("master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 pickup unix n - n 60 1 pickup\n\
                 cleanup unix n - n - 0 cleanup\n\
                 qmgr unix n - n 300 1 qmgr\n\
                 rewrite unix - - n - - trivial-rewrite\n\
                 bounce unix - - n - 0 bounce\n\
                 defer unix - - n - 0 bounce\n\
                 trace unix - - n - 0 bounce\n\
                 verify unix - - n - 1 verify\n\
                 flush unix n - n 1000? 0 flush\n\
                 proxymap unix - - n - - proxymap\n\
                 smtp unix - - n - - smtp\n\
                 relay unix - - n - - smtp\n\
                 showq unix n - n - - showq\n\
                 error unix - - n - - error\n\
                 retry unix - - n - - error\n\
                 discard unix - - n - - discard\n\
                 local unix - n n - - local\n\
                 anvil unix - - n - 1 anvil\n\
                 scache unix - - n - 1 scache\n\
                 postlog unix-dgram n - n - 1 postlogd\n"
            ),
        )
        .unwrap();
        let postfix = Postfix { dir, port };
        let out = Command::new(POSTFIX)
            .args(["-c", conf.to_str().unwrap(), "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postfix start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            postfix.log()
        );
        assert!(
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "Postfix did not start listening; its log:\n{}",
            postfix.log()
        );
        postfix
    }

    fn queue(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.queue().join("pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let conf = self.dir.path().join("etc");
        let pid = self.master_pid();
        let _ = Command::new(POSTFIX)
            .args(["-c", conf.to_str().unwrap(), "stop"])
            .output();
        if let Some(pid) = pid {
            let alive = || Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid);
            if !wait_until(Duration::from_secs(15), || !alive()) {
                lookup::signal(pid, "KILL");
            }
        }
    }
}

/// A master that exited but was not yet reaped by its parent (init) is gone for us.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_postfix(path: &Path) {
    let st = Command::new("chown")
        .args(["postfix", path.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "chown postfix {}", path.display());
}

/// Waits for the receiver to hold `n` messages, showing Postfix's log if it does not.
fn wait_for(sink: &Receiver, n: usize, postfix: &Postfix, lookups: &Lookups) {
    assert!(
        wait_until(Duration::from_secs(30), || sink.count() >= n),
        "the sink got {} of {n} messages; Postfix's log:\n{}\nsrs-relay's log:\n{}",
        sink.count(),
        postfix.log(),
        lookups.log()
    );
}

fn swaks_through(postfix: &Postfix, args: &[&str]) -> (bool, String) {
    let server = postfix.server();
    let mut all = vec!["--server", server.as_str(), "--timeout", "20"];
    all.extend_from_slice(args);
    let o = swaks(&all);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    data.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The whole round trip through Postfix with `maps` as the socketmap endpoint.
fn round_trip(postfix: &Postfix, sink: &Receiver, lookups: &Lookups) {
    // 1. Forwarded mail: the envelope sender becomes our SRS address; From: stays.
    let (ok, out) = swaks_through(
        postfix,
        &[
            "--from",
            "bob@example.org",
            "--to",
            "alice@remote.example",
            "--header",
            "From: Bob <bob@example.org>",
            "--header",
            "Subject: forwarded",
        ],
    );
    assert!(ok, "swaks:\n{out}\nPostfix's log:\n{}", postfix.log());
    wait_for(sink, 1, postfix, lookups);
    let first = sink.messages()[0].clone();
    let data = String::from_utf8_lossy(&first.data).into_owned();
    let srs = first.mail_from.clone();
    assert!(
        srs.starts_with("SRS0=") && srs.ends_with(&format!("=example.org=bob@{DOMAIN}")),
        "envelope sender at the sink: {srs}"
    );
    assert_eq!(first.rcpt_to, vec!["alice@remote.example".to_owned()]);
    assert_eq!(
        header(&data, "From"),
        Some("Bob <bob@example.org>"),
        "{data}"
    );
    // srs-relay's own reverse agrees.
    let mut c = lookups.socketmap_client();
    assert_eq!(c.query("reverse", &srs), "OK bob@example.org");

    // 2. The bounce to the SRS address reaches the original sender, envelope and To:.
    let (ok, out) = swaks_through(
        postfix,
        &[
            "--from",
            "<>",
            "--to",
            &srs,
            "--header",
            "Subject: Undelivered Mail Returned to Sender",
        ],
    );
    assert!(ok, "swaks:\n{out}\nPostfix's log:\n{}", postfix.log());
    wait_for(sink, 2, postfix, lookups);
    let bounce = sink.messages()[1].clone();
    assert_eq!(bounce.mail_from, "", "the null sender is never rewritten");
    assert_eq!(bounce.rcpt_to, vec!["bob@example.org".to_owned()]);
    let data = String::from_utf8_lossy(&bounce.data).into_owned();
    assert_eq!(header(&data, "To"), Some("bob@example.org"), "{data}");

    // 3. A sender of our own domain is left alone.
    let (ok, out) = swaks_through(
        postfix,
        &[
            "--from",
            &format!("carol@{DOMAIN}"),
            "--to",
            "dave@remote.example",
        ],
    );
    assert!(ok, "swaks:\n{out}");
    wait_for(sink, 3, postfix, lookups);
    assert_eq!(sink.messages()[2].mail_from, format!("carol@{DOMAIN}"));

    // 4. A forged bounce (right shape, wrong hash) and an expired one are refused at
    //    RCPT for good (5xx: no retries), and nothing goes anywhere: not to the sink, not
    //    to the postmaster.
    let expired = format!("SRS0=te87=T7=example.org=bob@{DOMAIN}");
    for bad in [format!("SRS0=FAKE{}", &srs[9..]), expired] {
        let (ok, out) = swaks_through(postfix, &["--from", "<>", "--to", &bad]);
        assert!(!ok, "a forged SRS address was accepted:\n{out}");
        let refusal = out
            .lines()
            .find(|l| l.starts_with("<** "))
            .unwrap_or_default()
            .to_owned();
        assert!(refusal.starts_with("<** 550 5.1.1"), "swaks:\n{out}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 3, "{:?}", sink.messages().last());
}

#[test]
fn postfix_rewrites_through_the_socketmap() {
    let sink = Receiver::start();
    let lookups = Lookups::start("", "");
    let postfix = Postfix::start(&format!("inet:127.0.0.1:{}", lookups.socketmap), sink.port);
    let start = Instant::now();
    round_trip(&postfix, &sink, &lookups);
    eprintln!("round trip took {:?}", start.elapsed());
}

#[test]
fn postfix_over_a_unix_socket_in_its_queue_directory() {
    // The documented setup: the socket in Postfix's queue directory, named relative to it
    // (`socketmap:unix:srs-relay:…`) so that chrooted Postfix daemons reach it too; group
    // postfix, mode 0660.
    let sink = Receiver::start();
    let postfix = Postfix::start("unix:srs-relay", sink.port);
    let socket = postfix.queue().join("srs-relay");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets"), format!("{}\n", lookup::SECRET)).unwrap();
    let listen = format!("unix:{}", socket.display());
    let lookups = Lookups::start_in(
        dir,
        "",
        &[&listen],
        "socket_group = \"postfix\"\nsocket_mode = \"0660\"",
    );
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    round_trip(&postfix, &sink, &lookups);
}
