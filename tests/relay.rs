//! The relay end to end: the real binary, swaks as the sending client, a recording
//! receiver (and Postfix's smtp-sink) downstream, all on loopback ports picked at run time.

mod common;

use std::time::Duration;

use common::*;

/// A relay with the aliases of the harness, delivering to `smarthost`, retrying every second.
fn relay_to(smarthost: &str) -> Relay {
    Relay::start_full(
        "",
        &format!("smarthost = \"{smarthost}\"\n"),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    )
}

/// Splits off the Received header srs-relay prepended.
fn strip_our_received(data: &[u8]) -> &[u8] {
    assert!(
        data.starts_with(b"Received: from "),
        "{}",
        String::from_utf8_lossy(&data[..data.len().min(200)])
    );
    let mut i = 0;
    loop {
        let end = data[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i + 2;
        i = end;
        if data.get(i) != Some(&b'\t') {
            return &data[i..];
        }
    }
}

#[test]
fn alias_forward_rewrites_the_sender_and_keeps_the_body_byte_exact() {
    let receiver = Receiver::start();
    let relay = relay_to(&receiver.addr());
    let mut body = Vec::new();
    body.extend_from_slice(
        b"From: Bob <bob@sender.example>\r\nTo: john@forward.example\r\nSubject: byte exact\r\n",
    );
    body.extend_from_slice(b"X-Long: ");
    body.extend_from_slice(&b"h".repeat(1500));
    body.extend_from_slice(b"\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n \r\n8-bit: caf\xc3\xa9 \xff\xfe\r\nlast line\r\n");
    let file = relay.dir.path().join("msg.eml");
    std::fs::write(&file, &body).unwrap();
    let out = swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "bob@sender.example",
        "--to",
        "john@forward.example",
        "--data",
        &format!("@{}", file.display()),
    ]);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() == 1),
        "not delivered; log:\n{}",
        relay.log()
    );
    let m = &receiver.messages()[0];
    assert_eq!(m.rcpt_to, ["john@home.example"]);
    assert!(m.mail_from.starts_with("john+SRS="), "{}", m.mail_from);
    assert!(
        m.mail_from.ends_with("=sender.example=bob@forward.example"),
        "{}",
        m.mail_from
    );
    assert_eq!(relay.reverse(&m.mail_from), "bob@sender.example");
    // swaks ends DATA with its own CRLF before the dot.
    let mut want = body.clone();
    want.extend_from_slice(b"\r\n");
    assert_bytes_eq(
        strip_our_received(&m.data),
        &want,
        "body changed in transit",
    );
    // Header From untouched; the spool is empty once delivered.
    assert!(wait_until(Duration::from_secs(5), || relay.spooled() == 0));
    let log = relay.log();
    assert!(
        log.contains("received") && log.contains("delivered"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "secret in the log");
}

#[test]
fn ten_megabyte_message_arrives_intact() {
    let receiver = Receiver::start();
    let relay = relay_to(&receiver.addr());
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    while body.len() < 10 * 1024 * 1024 {
        body.extend_from_slice(line);
    }
    let file = relay.dir.path().join("big.eml");
    std::fs::write(&file, &body).unwrap();
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "bob@sender.example",
        "--to",
        "john@forward.example",
        "--data",
        &format!("@{}", file.display()),
    ]);
    assert!(
        wait_until(Duration::from_secs(60), || receiver.count() == 1),
        "log:\n{}",
        relay.log()
    );
    body.extend_from_slice(b"\r\n"); // swaks' CRLF before the dot
    assert_bytes_eq(
        strip_our_received(&receiver.messages()[0].data),
        &body,
        "10 MB body",
    );
}

#[test]
fn who_may_relay() {
    let receiver = Receiver::start();
    let relay = relay_to(&receiver.addr());
    // A stranger to a stranger: relaying denied.
    let o = swaks(&[
        "--server",
        &relay.addr(),
        "--from",
        "x@a.example",
        "--to",
        "y@b.example",
        "--quit-after",
        "RCPT",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("550 5.7.1"), "{out}");
    // Unknown user in our domain.
    let o = swaks(&[
        "--server",
        &relay.addr(),
        "--from",
        "x@a.example",
        "--to",
        "nobody@forward.example",
        "--quit-after",
        "RCPT",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("550 5.1.1"), "{out}");
    // An alias with two targets: both get it, in one transaction.
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "x@a.example",
        "--to",
        "TEAM@Forward.Example",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() == 1),
        "log:\n{}",
        relay.log()
    );
    let m = &receiver.messages()[0];
    assert_eq!(m.rcpt_to, ["a@home.example", "b@home.example"]);
    assert!(m.mail_from.starts_with("team+SRS="), "{}", m.mail_from);
    // Null sender passes unchanged.
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "<>",
        "--to",
        "john@forward.example",
    ]);
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 2));
    assert_eq!(receiver.messages()[1].mail_from, "");
    // A sender in our own domain is not rewritten.
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "boss@forward.example",
        "--to",
        "john@forward.example",
    ]);
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 3));
    assert_eq!(receiver.messages()[2].mail_from, "boss@forward.example");
    // The queue file goes once the 250 is in, which the receiver counts before sending.
    assert!(wait_until(Duration::from_secs(5), || relay.spooled() == 0));
}

#[test]
fn trusted_network_relays_with_the_default_domain() {
    let receiver = Receiver::start();
    let relay = Relay::start_with(
        "[queue]\nretry_intervals = [\"1s\"]\n",
        &format!(
            "[relay]\ntrusted_networks = [\"127.0.0.0/8\"]\nsmarthost = \"{}\"\n",
            receiver.addr()
        ),
    );
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "alice@onprem.example",
        "--to",
        "someone@elsewhere.example",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() == 1),
        "log:\n{}",
        relay.log()
    );
    let m = &receiver.messages()[0];
    assert_eq!(m.rcpt_to, ["someone@elsewhere.example"]);
    assert!(
        m.mail_from.starts_with("bounces+SRS=") && m.mail_from.ends_with("@forward.example"),
        "{}",
        m.mail_from
    );
    assert_eq!(relay.reverse(&m.mail_from), "alice@onprem.example");
    // Still not for our own domain's unknown users.
    let o = swaks(&[
        "--server",
        &relay.addr(),
        "--from",
        "a@onprem.example",
        "--to",
        "nobody@forward.example",
        "--quit-after",
        "RCPT",
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("550 5.1.1"));
}

#[test]
fn kill_9_loses_nothing_that_got_250() {
    // Downstream is down while the messages arrive, so they sit in the spool.
    let down_port = free_port();
    let mut relay = relay_to(&format!("127.0.0.1:{down_port}"));
    let n = 20;
    for i in 0..n {
        let out = swaks_ok(&[
            "--server",
            &relay.addr(),
            "--from",
            &format!("s{i}@sender.example"),
            "--to",
            "john@forward.example",
        ]);
        assert!(out.contains("250 2.0.0 OK queued"), "{out}");
    }
    relay.kill9();
    assert_eq!(
        relay.spooled(),
        n,
        "every acknowledged message is in the spool"
    );
    let receiver = Receiver::start_on(down_port);
    relay.spawn();
    assert!(
        wait_until(Duration::from_secs(30), || receiver.count() == n),
        "got {} of {n}; log:\n{}",
        receiver.count(),
        relay.log()
    );
    let mut senders: Vec<String> = receiver
        .messages()
        .iter()
        .map(|m| relay.reverse(&m.mail_from))
        .collect();
    senders.sort();
    senders.dedup();
    assert_eq!(senders.len(), n, "each message exactly once");
}

#[test]
fn temporary_failure_then_recovery_and_permanent_failure() {
    let receiver = Receiver::start();
    receiver
        .script
        .lock()
        .unwrap()
        .rcpt
        .insert("john@home.example".into(), "451 4.3.0 try later".into());
    receiver
        .script
        .lock()
        .unwrap()
        .rcpt
        .insert("b@home.example".into(), "550 5.1.1 no such user".into());
    let relay = relay_to(&receiver.addr());
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "x@a.example",
        "--to",
        "john@forward.example",
    ]);
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "y@a.example",
        "--to",
        "team@forward.example",
    ]);
    // a@ is delivered, b@ fails for good (its DSN goes back to y@, through the same
    // smarthost), john@ is deferred.
    let to = |r: &Received| r.rcpt_to.join(",");
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() == 2),
        "log:\n{}",
        relay.log()
    );
    let mut first: Vec<String> = receiver.messages().iter().map(to).collect();
    first.sort();
    assert_eq!(first, ["a@home.example", "y@a.example"]);
    let dsn = receiver
        .messages()
        .into_iter()
        .find(|m| to(m) == "y@a.example")
        .unwrap();
    assert_eq!(dsn.mail_from, "");
    // It names the alias (dsn.hide_forward_targets), not b@home.example.
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Final-Recipient: rfc822; team@forward.example"),
        "{text}"
    );
    assert!(!text.contains("b@home.example"), "{text}");
    assert!(
        wait_until(Duration::from_secs(10), || relay.log().contains("deferred")),
        "log:\n{}",
        relay.log()
    );
    let log = relay.log();
    assert!(
        log.contains("b@home.example") && log.contains("550 5.1.1"),
        "{log}"
    );
    // The receiver recovers: john@ is delivered on a later attempt.
    receiver.script.lock().unwrap().rcpt.clear();
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() == 3),
        "log:\n{}",
        relay.log()
    );
    assert_eq!(receiver.messages()[2].rcpt_to, ["john@home.example"]);
    assert!(wait_until(Duration::from_secs(5), || relay.spooled() == 0));
}

#[test]
fn sigterm_keeps_the_spool_and_restart_resumes() {
    let down_port = free_port();
    let mut relay = relay_to(&format!("127.0.0.1:{down_port}"));
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "x@a.example",
        "--to",
        "john@forward.example",
    ]);
    let status = relay.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(relay.spooled(), 1);
    let receiver = Receiver::start_on(down_port);
    relay.spawn();
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() == 1),
        "log:\n{}",
        relay.log()
    );
}

/// `log.format = "json"`: every line is a JSON object with its fields at the top level,
/// and one `queue_id` follows a message from received to delivered.
#[test]
fn json_log_lines_follow_a_message_by_queue_id() {
    let receiver = Receiver::start();
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "[log]\nformat = \"json\"\n",
    );
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "bob@example.org",
        "--to",
        "john@forward.example",
    ]);
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 1));
    let mut lines = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        lines = relay
            .log()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .collect::<Vec<_>>();
        lines.iter().any(|l| l["event"] == "delivered")
    }));
    let received = lines
        .iter()
        .find(|l| l["event"] == "received")
        .expect("received line");
    let delivered = lines.iter().find(|l| l["event"] == "delivered").unwrap();
    assert!(
        received["queue_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{received}"
    );
    assert_eq!(received["queue_id"], delivered["queue_id"]);
    assert_eq!(received["from"], "bob@example.org");
    assert_eq!(delivered["rcpt"], "john@home.example");
    assert_eq!(delivered["level"], "INFO");
    assert!(delivered["timestamp"].is_string());
}
