//! The Postfix lookup services over real sockets: socketmap (TCP and UNIX-domain) and
//! tcp_table, as `srs-relay socketmap` and as part of `serve`; malformed and oversized
//! requests, timeouts, the connection limit, and many concurrent connections.

mod lookup;

use lookup::common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lookup::{DOMAIN, Lookups, SocketmapClient, TcpTableClient, wait_until};

/// The day-stamp of today's classic addresses is not known in advance: check the shape.
fn assert_srs0(reply: &str, prefix: &str, sender_domain: &str, sender_local: &str) {
    let address = reply
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{reply:?} lacks {prefix:?}"));
    assert!(address.starts_with("SRS0="), "{reply}");
    assert!(
        address.ends_with(&format!("={sender_domain}={sender_local}@{DOMAIN}")),
        "{reply}"
    );
}

#[test]
fn socketmap_forward_and_reverse() {
    let l = Lookups::start(
        "local_domains = [\"mail.example\"]",
        "exclude_domains = [\"partner.example\", \".friends.example\"]",
    );
    let mut c = l.socketmap_client();
    let reply = c.query("forward", "bob@example.org");
    assert_srs0(&reply, "OK ", "example.org", "bob");
    let srs = reply.strip_prefix("OK ").unwrap().to_owned();
    assert_eq!(c.query("reverse", &srs), "OK bob@example.org");
    // Receivers lowercase local parts; the hash is checked case-insensitively.
    assert_eq!(
        c.query("reverse", &srs.to_ascii_lowercase()),
        "OK bob@example.org"
    );
    // Left alone: no domain, our own domains, excluded domains (a leading dot: subdomains).
    for sender in [
        "postmaster",
        "alice@forward.example",
        &srs,
        "alice@mail.example",
        "alice@partner.example",
        "alice@x.friends.example",
    ] {
        assert_eq!(c.query("forward", sender), "NOTFOUND ", "{sender}");
    }
    assert_srs0(
        &c.query("forward", "alice@friends.example"),
        "OK ",
        "friends.example",
        "alice",
    );
    // Reverse: not SRS, or someone else's SRS address: not found.
    for address in [
        "bob@example.org",
        "alice@forward.example",
        "SRS0=FAKE=2W=example.org=bob@other-forwarder.example",
    ] {
        assert_eq!(c.query("reverse", address), "NOTFOUND ", "{address}");
    }
    // Ours but forged or expired: not rewritten (Postfix then rejects the unknown
    // recipient), and logged as refused.
    let forged = format!("SRS0=FAKE{}", &srs[9..]);
    assert_eq!(c.query("reverse", &forged), "NOTFOUND ");
    let expired = "SRS0=te87=T7=otherdomain.com=test@forward.example";
    assert_eq!(c.query("reverse", expired), "NOTFOUND ");
    // An unknown map is refused, and the connection goes on.
    let reply = c.query("virtual", "bob@example.org");
    assert!(reply.starts_with("PERM unknown map"), "{reply}");
    assert_eq!(c.query("reverse", &srs), "OK bob@example.org");
    // Refusals are logged, with the address and the reason (never the secret).
    let log = l.log();
    let refused = |address: &str, reason: &str| {
        log.lines().any(|line| {
            line.contains(" INFO ")
                && line.contains("refused")
                && line.contains(address)
                && line.contains(reason)
        })
    };
    assert!(refused(&forged, "bad SRS hash"), "{log}");
    assert!(refused(expired, "expired"), "{log}");
    assert!(!log.contains(lookup::SECRET), "the secret is in the log");
}

#[test]
fn socketmap_answers_pipelined_requests_in_order() {
    let l = Lookups::start("", "");
    let mut c = l.socketmap_client();
    let mut batch = Vec::new();
    for i in 0..20 {
        srs_relay::socketmap::netstring::write_netstring(
            &mut batch,
            format!("forward user{i}@example.org").as_bytes(),
        );
    }
    c.send(&batch);
    for i in 0..20 {
        let reply = c.reply().unwrap();
        assert_srs0(&reply, "OK ", "example.org", &format!("user{i}"));
    }
}

#[test]
fn socketmap_refuses_malformed_netstrings_and_closes() {
    let l = Lookups::start("", "");
    let cases: [(&[u8], &str); 7] = [
        (b"forward bob@example.org", "PERM invalid query"),
        (b"x:abc,", "PERM invalid query"),
        (
            b"5:abcdef,",
            "PERM invalid query: netstring does not end with a comma",
        ),
        (b"01:a,", "PERM invalid query"),
        (b"13:bob@example.org,", "PERM invalid query"),
        (b"7:forward,", "PERM invalid query: no map name"),
        // Oversized: refused from the length alone, the payload is never awaited.
        (
            b"99999999:",
            "PERM invalid query: netstring longer than 1024",
        ),
    ];
    for (input, want) in cases {
        let mut c = l.socketmap_client();
        c.send(input);
        let reply = c.reply().unwrap_or_default();
        assert!(reply.starts_with(want), "{input:?}: {reply:?}");
        assert!(c.closed(), "{input:?}: connection left open");
    }
    // A request of exactly the limit is served.
    let mut c = l.socketmap_client();
    let key = format!(
        "{}@example.org",
        "a".repeat(1024 - "forward @example.org".len())
    );
    // (Too long for a stateless address: it takes the stored form.)
    let reply = c.query("forward", &key);
    assert!(reply.starts_with("OK bounces+SRS="), "{reply:?}");
    // A flood of garbage gets one PERM and a close, not a hang.
    let mut c = l.socketmap_client();
    let _ = c.stream.write_all(&vec![b'9'; 100_000]);
    let reply = c.reply().unwrap_or_default();
    assert!(reply.starts_with("PERM"), "{reply:?}");
    assert!(c.closed());
    // The service is still there.
    let mut c = l.socketmap_client();
    assert_srs0(
        &c.query("forward", "bob@example.org"),
        "OK ",
        "example.org",
        "bob",
    );
}

#[test]
fn idle_and_stalled_connections_are_closed() {
    let l = Lookups::start("", "idle_timeout = \"1s\"\nrequest_timeout = \"1s\"");
    // Idle after a request.
    let mut idle = l.socketmap_client();
    assert_eq!(idle.query("reverse", "bob@example.org"), "NOTFOUND ");
    // Stalled in the middle of a request.
    let mut stalled = l.socketmap_client();
    stalled.send(b"30:forward bob@");
    let mut stalled_tcp = TcpTableClient::connect(l.tcp_forward);
    stalled_tcp.send(b"get bob@exam");
    // Trickling a byte at a time: the request must still be whole within the timeout.
    let mut trickle = l.socketmap_client();
    let mut writer = trickle.stream.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        for b in b"40:forward a-rather-long-sender@example.org,"
            .iter()
            .cycle()
            .take(25)
        {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let start = Instant::now();
    assert!(idle.closed());
    assert!(stalled.closed());
    assert!(stalled_tcp.closed());
    assert!(trickle.closed());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    trickler.join().unwrap();
}

#[test]
fn tcp_table_forward_and_reverse() {
    let l = Lookups::start("", "exclude_domains = [\"partner.example\"]");
    let mut fwd = TcpTableClient::connect(l.tcp_forward);
    let mut rev = TcpTableClient::connect(l.tcp_reverse);
    let reply = fwd.get("bob@example.org");
    assert_srs0(&reply, "200 ", "example.org", "bob");
    let srs = reply[4..].to_owned();
    assert_eq!(rev.get(&srs), "200 bob@example.org");
    // URL-encoding both ways: a quoted local part with a space and a percent sign.
    let reply = fwd.get("\"john doe%\"@example.org");
    assert!(reply.starts_with("200 \"SRS0="), "{reply}");
    assert!(
        reply.ends_with(&format!("=example.org=john doe%\"@{DOMAIN}")),
        "{reply}"
    );
    assert_eq!(rev.get(&reply[4..]), "200 \"john doe%\"@example.org");
    // Not found: 500 and a reason; the connection stays.
    assert!(fwd.get("alice@partner.example").starts_with("500 "));
    assert!(fwd.get("alice@forward.example").starts_with("500 "));
    assert!(rev.get("bob@example.org").starts_with("500 "));
    let forged = format!("SRS0=FAKE{}", &srs[9..]);
    assert!(rev.get(&forged).starts_with("500 bad SRS hash"));
    assert_eq!(rev.get(&srs), "200 bob@example.org");
    // Each map on its own port: a sender asked on the reverse port is not rewritten.
    assert!(rev.get("bob@example.org").starts_with("500 "));
}

#[test]
fn tcp_table_refuses_invalid_requests_and_closes() {
    let l = Lookups::start("", "");
    let long = format!("get {}\n", "a".repeat(5000));
    let cases: [&[u8]; 4] = [
        b"put bob@example.org\n",
        b"get\n",
        b"get a%zz@b.example\n",
        long.as_bytes(),
    ];
    for input in cases {
        let mut c = TcpTableClient::connect(l.tcp_forward);
        c.send(input);
        let line = c.line().unwrap_or_default();
        assert!(
            line.starts_with("500 "),
            "{:?}: {line:?}",
            &input[..20.min(input.len())]
        );
        assert!(c.closed());
    }
    // A line that never ends is refused once it passes the limit.
    let mut c = TcpTableClient::connect(l.tcp_forward);
    c.send(b"get ");
    c.send(&[b'x'; 5000]);
    assert_eq!(c.line().unwrap_or_default(), "500 request too long");
    assert!(c.closed());
}

#[test]
fn fifty_concurrent_connections() {
    let l = Lookups::start("", "");
    let port = l.socketmap;
    let tcp = (l.tcp_forward, l.tcp_reverse);
    let barrier = Arc::new(Barrier::new(50));
    let workers: Vec<_> = (0..50)
        .map(|n| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // All fifty connections are open at once before any lookup.
                let mut sm = SocketmapClient::tcp(port);
                let (mut fwd, mut rev) = (
                    TcpTableClient::connect(tcp.0),
                    TcpTableClient::connect(tcp.1),
                );
                barrier.wait();
                for i in 0..40 {
                    let sender = format!("u{n}x{i}@d{n}.example");
                    let srs = sm.query("forward", &sender);
                    let srs = srs.strip_prefix("OK ").expect("rewritten").to_owned();
                    assert_eq!(sm.query("reverse", &srs), format!("OK {sender}"));
                    let srs = fwd.get(&sender);
                    assert_eq!(rev.get(&srs[4..]), format!("200 {sender}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client failed");
    }
}

#[test]
fn over_the_connection_limit_postfix_is_told_to_retry() {
    let l = Lookups::start("", "max_connections = 3");
    // The harness's start-up probes hold slots until the server sees them closed.
    let mut open = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        let mut c = l.socketmap_client();
        if c.query("reverse", "bob@example.org") == "NOTFOUND " {
            open.push(c);
        }
        open.len() == 3
    }));
    let mut fourth = l.socketmap_client();
    assert_eq!(
        fourth.reply().as_deref(),
        Some("TEMP too many connections, try again later")
    );
    assert!(fourth.closed());
    let mut tcp = TcpTableClient::connect(l.tcp_forward);
    assert_eq!(
        tcp.line().as_deref(),
        Some("400 too many connections, try again later")
    );
    // A slot comes back when a connection closes.
    drop(open.pop());
    assert!(wait_until(Duration::from_secs(10), || {
        let mut c = TcpTableClient::connect(l.tcp_reverse);
        c.send(b"get bob@example.org\n");
        c.line().is_some_and(|l| l.starts_with("500 "))
    }));
}

#[test]
fn socketmap_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets"), format!("{}\n", lookup::SECRET)).unwrap();
    let path = dir.path().join("srs.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    // Our own group: a chown any user may do.
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    let mut l = Lookups::start_in(
        dir,
        "",
        &["unix:srs.sock"],
        &format!("socket_mode = \"0620\"\nsocket_group = \"{gid}\""),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&path).is_ok()
    }));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o620);
    assert_eq!(meta.gid(), gid);
    let mut c = SocketmapClient::unix(&path);
    let reply = c.query("forward", "bob@example.org");
    assert_srs0(&reply, "OK ", "example.org", "bob");
    assert_eq!(c.query("reverse", &reply[3..]), "OK bob@example.org");
    drop(c);
    assert!(l.terminate().success());
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn a_socket_in_use_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srs.sock");
    let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::write(dir.path().join("secrets"), "s\n").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[srs]\nsecrets_file = \"secrets\"\ndefault_domain = \"forward.example\"\n\
         [socketmap]\nlisten = [\"unix:srs.sock\"]\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args(["socketmap", "--config", config.to_str().unwrap()])
        // Tests run as root in CI: root is allowed here (see tests/privileges.rs).
        .env("SRS_RELAY__SERVER__ALLOW_ROOT", "true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by a running service"), "{err}");
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets"), "s\n").unwrap();
    let domain = "default_domain = \"forward.example\"";
    // (more [srs] keys, the rest of the file, what the error must say)
    let cases = [
        (
            "",
            "[socketmap]\nlisten = [\"127.0.0.1:1\"]",
            "socketmap.listen: needs srs.default_domain",
        ),
        (
            "",
            "[tcp_table]\nreverse_listen = [\"127.0.0.1:1\"]",
            "tcp_table.forward_listen: needs srs.default_domain",
        ),
        (
            domain,
            "[socketmap]\nlisten = [\"localhost\"]",
            "socketmap.listen",
        ),
        (
            domain,
            "[socketmap]\nlisten = [\"unix:\"]",
            "socketmap.listen",
        ),
        (
            domain,
            "[tcp_table]\nforward_listen = [\"127.0.0.1\"]",
            "tcp_table.forward_listen",
        ),
        (
            "",
            "[socketmap]\nsocket_mode = \"rw\"",
            "socketmap.socket_mode",
        ),
        (
            "",
            "[socketmap]\nsocket_mode = \"1777\"",
            "socketmap.socket_mode",
        ),
        (
            "",
            "[socketmap]\nidle_timeout = \"soon\"",
            "socketmap.idle_timeout",
        ),
        (
            "",
            "[socketmap]\nrequest_timeout = \"soon\"",
            "socketmap.request_timeout",
        ),
        (
            "",
            "[socketmap]\nidle_timeout = \"0s\"",
            "socketmap.idle_timeout: must be longer than zero",
        ),
        (
            "",
            "[socketmap]\nmax_connections = 0",
            "socketmap.max_connections",
        ),
        (
            "",
            "[socketmap]\nexclude_domains = [\"\"]",
            "socketmap.exclude_domains",
        ),
        (
            "",
            "[socketmap]\nsocket_owner = \"no-such-user-here\"",
            "socketmap.socket_owner",
        ),
        (
            "",
            "[socketmap]\nsocket_group = \"no-such-group-here\"",
            "socketmap.socket_group",
        ),
        ("", "[tcp_table]\nforward_port = 10001", "forward_port"),
        (
            "default_domain = \"bad domain\"",
            "[socketmap]\nlisten = [\"127.0.0.1:1\"]",
            "srs.default_domain",
        ),
    ];
    let config = dir.path().join("c.toml");
    for (srs, rest, want) in cases {
        std::fs::write(
            &config,
            format!("[srs]\nsecrets_file = \"secrets\"\n{srs}\n{rest}\n"),
        )
        .unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{rest:?}: {err}");
        assert!(err.contains(want), "{rest:?}: {err}");
    }
    // Nothing configured: the command says what to set.
    std::fs::write(&config, "[srs]\nsecrets_file = \"secrets\"\n").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args(["socketmap", "--config", config.to_str().unwrap()])
        // Tests run as root in CI: root is allowed here (see tests/privileges.rs).
        .env("SRS_RELAY__SERVER__ALLOW_ROOT", "true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to serve"));
}

#[test]
fn sigterm_stops_the_service_with_connections_open() {
    let mut l = Lookups::start("", "");
    let mut c = l.socketmap_client();
    assert_eq!(c.query("reverse", "bob@example.org"), "NOTFOUND ");
    let start = Instant::now();
    assert!(l.terminate().success());
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(c.closed());
}

#[test]
fn serve_starts_the_lookup_services() {
    let port = lookup::free_port();
    let mut relay =
        common::Relay::start(&format!("[socketmap]\nlisten = [\"127.0.0.1:{port}\"]\n"));
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let mut c = SocketmapClient::tcp(port);
    // The relay's own form (Microsoft by default) at srs.default_domain.
    let reply = c.query("forward", "bob@example.org");
    assert!(reply.starts_with("OK bounces+SRS="), "{reply}");
    assert!(
        reply.ends_with("=example.org=bob@forward.example"),
        "{reply}"
    );
    assert_eq!(c.query("reverse", &reply[3..]), "OK bob@example.org");
    assert_eq!(relay.reverse(&reply[3..]), "bob@example.org");
    // SMTP is served next to it.
    let mut smtp = common::Client::connect(&relay.addr());
    assert!(smtp.cmd("EHLO test").starts_with("250"));
    assert!(smtp.cmd("QUIT").starts_with("221"));
    // SIGTERM stops both, the open lookup connection included.
    assert!(relay.terminate().success());
    assert!(c.closed());
}
