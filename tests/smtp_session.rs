//! The inbound session against misbehaving and careful clients: limits, smuggling,
//! loops, STARTTLS with a real rustls client, TLS 1.1 refused, tls.require.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn limits() {
    let relay = Relay::start_full(
        "max_message_size = 2000\nmax_recipients = 3\ncommand_timeout = \"2s\"\nmax_errors = 50\n",
        "",
        "",
    );
    let mut c = Client::connect(&relay.addr());
    let ehlo = c.cmd("EHLO client.test");
    for ext in [
        "PIPELINING",
        "SIZE 2000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(ext), "{ehlo}");
    }
    // SIZE declared too big.
    assert!(
        c.cmd("MAIL FROM:<a@b.example> SIZE=5000")
            .starts_with("552 5.3.4")
    );
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("250 2.1.0"));
    // Recipients per message.
    for _ in 0..3 {
        assert!(
            c.cmd("RCPT TO:<john@forward.example>")
                .starts_with("250 2.1.5")
        );
    }
    assert!(
        c.cmd("RCPT TO:<john@forward.example>")
            .starts_with("452 4.5.3")
    );
    // Oversized data is drained, then refused; the session goes on.
    assert!(c.cmd("DATA").starts_with("354"));
    let mut big = b"Subject: x\r\n\r\n".to_vec();
    for _ in 0..100 {
        big.extend_from_slice(&b"y".repeat(98));
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b".\r\n");
    c.send(&big);
    assert!(c.reply().starts_with("552 5.3.4"));
    assert!(c.cmd("NOOP").starts_with("250"));
    // Overlong command line.
    let long = format!("MAIL FROM:<{}@b.example>", "a".repeat(1100));
    assert!(c.cmd(&long).starts_with("500 5.5.2"));
    assert!(c.cmd("RSET").starts_with("250 2.0.0"));
    assert!(c.cmd("VRFY john").starts_with("252"));
    assert!(c.cmd("BOGUS").starts_with("500 5.5.2"));
    // Idle timeout.
    let started = std::time::Instant::now();
    let rest = c.rest();
    assert!(rest.starts_with("421 4.4.2"), "{rest}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(relay.spooled(), 0);
}

#[test]
fn sequence_errors_and_error_limit() {
    let relay = Relay::start_full("max_errors = 3\n", "", "");
    let mut c = Client::connect(&relay.addr());
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("503 5.5.1"));
    assert!(c.cmd("HELO client.test").starts_with("250"));
    assert!(
        c.cmd("RCPT TO:<john@forward.example>")
            .starts_with("503 5.5.1")
    );
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.reply().starts_with("421 4.7.0"));
    assert_eq!(c.rest(), "");
}

#[test]
fn bare_lf_and_bare_cr_are_refused() {
    let relay = Relay::start_full("", "", "");
    for bad in [
        &b"Subject: x\r\n\r\nsmuggled\n.\nMAIL FROM:<evil@x>\r\n.\r\n"[..],
        b"Subject: x\r\n\r\nbare\rcr\r\n.\r\n",
    ] {
        let mut c = Client::connect(&relay.addr());
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<a@b.example>");
        c.cmd("RCPT TO:<john@forward.example>");
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(bad);
        let r = c.reply();
        assert!(r.starts_with("550 5.5.2"), "{r}");
        // The session is closed: nothing after the bare line end is read as a command.
        assert_eq!(c.rest(), "");
    }
    assert_eq!(relay.spooled(), 0);
}

#[test]
fn mail_loops_are_refused_at_data() {
    let relay = Relay::start_full("", "max_received_headers = 5\n", "");
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@b.example>");
    c.cmd("RCPT TO:<john@forward.example>");
    c.cmd("DATA");
    let mut m = String::new();
    for i in 0..6 {
        m.push_str(&format!(
            "Received: from hop{i} by hop{i}; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        ));
    }
    m.push_str("Subject: loop\r\n\r\nbody\r\n.\r\n");
    c.send(m.as_bytes());
    assert!(c.reply().starts_with("554 5.4.6"));
    assert_eq!(relay.spooled(), 0);
}

#[test]
fn pipelined_transaction() {
    let relay = Relay::start_full("", "", "");
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO client.test");
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<john@forward.example>\r\nRCPT TO:<x@stranger.example>\r\nDATA\r\n");
    assert!(c.reply().starts_with("250 2.1.0"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("550 5.7.1"));
    assert!(c.reply().starts_with("354"));
    c.send(b"Subject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250 2.0.0 OK queued as"));
    assert!(c.reply().starts_with("221"));
    assert_eq!(relay.spooled(), 1);
}

// ---- TLS ----

fn tls_relay(require: bool) -> Relay {
    let certs = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args([
            "gen-cert",
            "--hostname",
            "relay.test",
            "--dir",
            certs.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    let relay = Relay::start_full(
        "",
        "",
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nrequire = {require}\n",
            cert.display(),
            key.display()
        ),
    );
    std::mem::forget(certs); // lives as long as the test process; tiny
    relay
}

fn read_reply<R: Read>(r: &mut R) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(1) => {
                out.push(b[0]);
                if out.ends_with(b"\r\n") {
                    let text = String::from_utf8_lossy(&out).into_owned();
                    let last = text
                        .trim_end()
                        .rsplit("\r\n")
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    if last.len() < 4 || last.as_bytes()[3] != b'-' {
                        return text;
                    }
                }
            }
            _ => return String::from_utf8_lossy(&out).into_owned(),
        }
    }
}

#[test]
fn starttls_with_rustls_then_mail() {
    let relay = tls_relay(true);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut c = Client::connect(&relay.addr());
        let ehlo = c.cmd("EHLO client.test");
        assert!(ehlo.contains("STARTTLS"), "{ehlo}");
        // tls.require: no mail in the clear.
        assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("530 5.7.0"));
        assert!(c.cmd("STARTTLS").starts_with("220"));
        let tcp: TcpStream = c.w.try_clone().unwrap();
        let conn = rustls::ClientConnection::new(
            tls_client_trusting_any(&[version]),
            "relay.test".try_into().unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"EHLO client.test\r\n").unwrap();
        let ehlo = read_reply(&mut tls);
        assert!(
            ehlo.starts_with("250") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
        assert_eq!(tls.conn.protocol_version(), Some(version.version));
        for (cmd, want) in [
            ("MAIL FROM:<a@b.example>", "250"),
            ("RCPT TO:<john@forward.example>", "250"),
            ("DATA", "354"),
            ("Subject: tls\r\n\r\nsecret stuff\r\n.", "250 2.0.0"),
            ("QUIT", "221"),
        ] {
            tls.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
            let r = read_reply(&mut tls);
            assert!(r.starts_with(want), "{cmd}: {r}");
        }
    }
    let log = relay.log();
    assert!(
        log.contains("TLSv1.3") && log.contains("TLSv1.2"),
        "TLS version not logged:\n{log}"
    );
    // The Received header records TLS.
    let queue = relay.dir.path().join("spool/queue");
    let msg = std::fs::read_dir(&queue)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "q"))
        .unwrap();
    let text = String::from_utf8(std::fs::read(msg.path()).unwrap()).unwrap();
    assert!(
        text.contains("with ESMTPS") && text.contains("(using TLSv1."),
        "{text}"
    );
}

#[test]
fn tls_1_1_is_refused() {
    let relay = tls_relay(false);
    let o = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &relay.addr(),
            "-starttls",
            "smtp",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{out}");
    // No session: openssl reports the attempted protocol with no cipher.
    assert!(
        out.contains("Cipher is (NONE)") && !out.contains("New, TLSv1.1"),
        "{out}"
    );
    // ...while TLS 1.2 from the same client works.
    let o = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &relay.addr(),
            "-starttls",
            "smtp",
            "-tls1_2",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("TLSv1.2"),
        "{out}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&o.stderr),
        relay.log()
    );
}

#[test]
fn connection_limits_per_ip() {
    let relay = Relay::start_full("max_connections_per_ip = 2\n", "", "");
    // The harness's readiness probe holds a slot until the server sees it close.
    let greeted = |addr: &str| {
        let s = TcpStream::connect(addr).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        std::io::BufRead::read_line(&mut r, &mut l).unwrap();
        l.starts_with("220").then_some(s)
    };
    let mut held = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        if let Some(s) = greeted(&relay.addr()) {
            held.push(s);
        }
        held.len() == 2
    }));
    let mut third = std::io::BufReader::new(TcpStream::connect(relay.addr()).unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut third, &mut line).unwrap();
    assert!(line.starts_with("421 4.7.0"), "{line}");
    held.pop();
    // The slot is given back when a session ends.
    assert!(wait_until(Duration::from_secs(5), || {
        let mut c = std::io::BufReader::new(TcpStream::connect(relay.addr()).unwrap());
        let mut l = String::new();
        std::io::BufRead::read_line(&mut c, &mut l).is_ok() && l.starts_with("220")
    }));
}

#[test]
fn first_run_creates_the_secrets_file() {
    let relay = Relay::start_full("", "", "");
    // The harness wrote `secrets`; a relay pointed at a missing file creates it.
    let dir = relay.dir.path();
    let cfg = std::fs::read_to_string(&relay.config).unwrap().replace(
        "secrets_file = \"secrets\"",
        "secrets_file = \"new-secrets\"",
    );
    let port = free_port();
    let cfg = cfg
        .replace(
            &format!("127.0.0.1:{}", relay.port),
            &format!("127.0.0.1:{port}"),
        )
        .replace("dir = \"spool\"", "dir = \"spool2\"") // the first relay holds its spool's lock
        .replace("[srs]\n", "[srs]\nstore = \"senders2.redb\"\n"); // and its store's
    let path = dir.join("second.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args(["serve", "--config", path.to_str().unwrap()])
        // Tests run as root in CI: root is allowed here (see tests/privileges.rs).
        .env("SRS_RELAY__SERVER__ALLOW_ROOT", "true")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let created = wait_until(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(created, "{}", String::from_utf8_lossy(&out.stderr));
    let secret_file = dir.join("new-secrets");
    let meta = std::fs::metadata(&secret_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(secret.trim().len() >= 43);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("created a new secrets file"), "{log}");
    assert!(!log.contains(secret.trim()), "the secret was logged");
}
