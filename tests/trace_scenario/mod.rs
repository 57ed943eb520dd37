//! The message trace end to end, shared by the store tests (tests/trace.rs for SQLite,
//! tests/trace_postgres.rs for PostgreSQL): the real binary relays over real SMTP, then
//! `srs-relay trace` finds each message with the right status, its CSV parses back, and
//! `trace show` lists a message's events.
#![allow(dead_code)]

use std::process::Output;
use std::time::Duration;

use super::common::*;

pub fn trace(relay: &Relay, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .arg("trace")
        .args(args)
        .args(["--config", relay.config.to_str().unwrap()])
        .output()
        .unwrap()
}

pub fn trace_ok(relay: &Relay, args: &[&str]) -> String {
    let o = trace(relay, args);
    assert!(
        o.status.success(),
        "trace {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// RFC 4180 records (quoted fields, doubled quotes, CRLF line ends).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// The CSV's rows as maps from the header's names.
pub fn csv_rows(relay: &Relay, args: &[&str]) -> Vec<std::collections::HashMap<String, String>> {
    let mut all = vec!["--csv"];
    all.extend_from_slice(args);
    let rows = parse_csv(&trace_ok(relay, &all));
    let header = rows[0].clone();
    assert_eq!(header[0], "time");
    rows[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), header.len(), "{r:?}");
            header.iter().cloned().zip(r.iter().cloned()).collect()
        })
        .collect()
}

/// Polls until the search by `recipient` gives `status` (the trace is written behind).
pub fn wait_status(relay: &Relay, recipient: &str, status: &str) {
    let found = wait_until(Duration::from_secs(20), || {
        csv_rows(relay, &["--recipient", recipient])
            .iter()
            .any(|r| r["status"] == status)
    });
    assert!(
        found,
        "{recipient}: no {status} row: {:?}\nlog:\n{}",
        csv_rows(relay, &["--recipient", recipient]),
        relay.log()
    );
}

/// Relays delivered, deferred, failed, refused (a forged bounce, a loop) and reversed
/// mail with the trace in the store `trace_section` sets (`[trace]...`, or empty for
/// the default SQLite file), then checks that `srs-relay trace` finds each as it should.
/// Returns the relay (still running) for further checks.
pub fn trace_finds_every_outcome(trace_section: &str) -> Relay {
    let home = Receiver::start();
    let sender = Receiver::start();
    home.script
        .lock()
        .unwrap()
        .rcpt
        .insert("a@home.example".into(), "451 4.3.0 try again later".into());
    home.script
        .lock()
        .unwrap()
        .rcpt
        .insert("gone@home.example".into(), "550 5.1.1 no such user".into());
    let mut relay = Relay::prepare_full(
        "",
        &format!(
            "routes = {{ \"home.example\" = \"{}\", \"sender.test\" = \"{}\" }}\n",
            home.addr(),
            sender.addr()
        ),
        &format!("[queue]\nretry_intervals = [\"1s\"]\n{trace_section}"),
    );
    let aliases = relay.dir.path().join("aliases");
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str("old@forward.example: gone@home.example\n");
    std::fs::write(&aliases, text).unwrap();
    relay.spawn();

    // Delivered: through the alias, with the SRS return path.
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "bob@sender.test",
        "--to",
        "john@forward.example",
        "--header",
        "Subject: hello, \"john\"",
        "--header",
        "Message-Id: <m1@sender.test>",
    ]);
    assert!(wait_until(Duration::from_secs(20), || home.count() >= 1));
    let srs = home.messages()[0].mail_from.clone();
    // Deferred for a@, delivered for b@ (one alias, two targets); the Subject encoded.
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "carol@sender.test",
        "--to",
        "team@forward.example",
        "--header",
        "Subject: =?UTF-8?Q?team_lunch?=",
    ]);
    // Refused at RCPT: the SRS address with its hash changed.
    let (head, tail) = srs.split_once("SRS=").unwrap();
    let flipped = if tail.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{head}SRS={flipped}{}", &tail[1..]);
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO probe.test");
    c.cmd("MAIL FROM:<>");
    let reply = c.cmd(&format!("RCPT TO:<{forged}>"));
    assert!(reply.starts_with("550"), "{reply}");
    c.cmd("QUIT");
    // A bounce to the real SRS address goes back to bob.
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "<>",
        "--to",
        &srs,
        "--header",
        "Subject: Undelivered Mail Returned to Sender",
    ]);
    assert!(wait_until(Duration::from_secs(20), || sender.count() >= 1));
    // Failed for good at the next hop: a DSN goes back to dave.
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "dave@sender.test",
        "--to",
        "old@forward.example",
    ]);
    // Refused at DATA: a mail loop.
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO loop.test");
    c.cmd("MAIL FROM:<eve@sender.test>");
    assert!(c.cmd("RCPT TO:<john@forward.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // Round and round between two hosts: 30 stamps each.
    let hop = "Received: from mx.a.test (mx.a.test [192.0.2.1])\r\n\tby relay.b.test with ESMTP id 1;\r\n\tFri, 4 Dec 2026 10:00:00 +0000\r\nReceived: from relay.b.test by MX.A.test\r\n\t(Postfix, from userid 0) id 2; Fri, 4 Dec 2026 10:00:00 +0000\r\n";
    c.send(hop.repeat(30).as_bytes());
    let reply = c.cmd("\r\nlooping\r\n.");
    assert!(reply.starts_with("554 5.4.6"), "{reply}");
    c.cmd("QUIT");

    wait_status(&relay, "gone@home.example", "failed");
    wait_status(&relay, "john@home.example", "delivered");
    wait_status(&relay, "a@home.example", "deferred");
    wait_status(&relay, "b@home.example", "delivered");
    wait_status(&relay, "bob@sender.test", "delivered");

    // The address as given finds it too, with the SRS sender it left with.
    let john = csv_rows(
        &relay,
        &[
            "--recipient",
            "JOHN@forward.example",
            "--status",
            "delivered",
        ],
    );
    assert_eq!(john.len(), 1, "{john:?}");
    let john = &john[0];
    assert_eq!(john["recipient"], "john@home.example");
    assert_eq!(john["sender"], "bob@sender.test");
    assert_eq!(john["srs_sender"], srs.to_ascii_lowercase());
    assert_eq!(john["subject"], "hello, \"john\"");
    assert_eq!(john["message_id"], "m1@sender.test");
    assert_eq!(john["attempts"], "1");
    assert!(john["reply"].starts_with("250"), "{john:?}");
    assert!(john["time"].ends_with('Z') && john["time"].contains('T'));

    // The loop's refusal may still be in the writer's batch after the deliveries above.
    let mut refused = Vec::new();
    wait_until(Duration::from_secs(10), || {
        refused = csv_rows(&relay, &["--status", "refused"]);
        refused.len() >= 2
    });
    assert_eq!(refused.len(), 2, "{refused:?}");
    // Newest first: the loop (at DATA, after expansion), then the forged bounce (at RCPT).
    assert_eq!(refused[0]["recipient"], "john@home.example");
    assert!(refused[0]["reply"].starts_with("554 5.4.6"), "{refused:?}");
    assert_eq!(
        refused[1]["original_recipient"],
        forged.to_ascii_lowercase()
    );
    assert!(refused[1]["reply"].starts_with("550 5.7.1"), "{refused:?}");
    // Mail-loop insight: the loop by the hosts of its Received chain.
    let loops = parse_csv(&trace_ok(&relay, &["--loops", "--since", "1d", "--csv"]));
    assert_eq!(
        loops[0],
        ["host", "messages", "stamps", "last"],
        "{loops:?}"
    );
    assert_eq!(loops[1][..3], ["mx.a.test", "1", "30"], "{loops:?}");
    assert_eq!(loops[2][..3], ["relay.b.test", "1", "30"], "{loops:?}");
    let json: serde_json::Value =
        serde_json::from_str(&trace_ok(&relay, &["--loops", "--json"])).unwrap();
    assert_eq!(json["loops"], 1, "{json}");
    assert!(trace_ok(&relay, &["--loops"]).contains("1 message(s) refused as mail loops"));
    assert_eq!(
        parse_csv(&trace_ok(&relay, &["--loops", "--until", "1h", "--csv"])).len(),
        1
    );
    // The refusal carries the id the message would have had, so `trace show` finds it.
    let loop_id = &refused[0]["queue_id"];
    assert!(!loop_id.is_empty(), "{refused:?}");
    assert!(trace_ok(&relay, &["show", loop_id]).contains("received_hosts"));
    let bounced = csv_rows(&relay, &["--status", "bounced"]);
    assert_eq!(bounced.len(), 1, "{bounced:?}");
    assert_eq!(bounced[0]["recipient"], "bob@sender.test");
    assert_eq!(bounced[0]["sender"], "");
    // `<>`: the null sender (the reversed bounce and the forged one).
    assert_eq!(csv_rows(&relay, &["--sender", "<>"]).len(), 2);
    assert_eq!(
        csv_rows(
            &relay,
            &["--recipient", "*@home.example", "--status", "deferred"]
        )
        .len(),
        1
    );
    assert_eq!(csv_rows(&relay, &["--sender", "carol@*"]).len(), 2);
    assert_eq!(csv_rows(&relay, &["--subject", "lunch"]).len(), 2);
    assert_eq!(csv_rows(&relay, &["--since", "1h"]).len(), 7);
    assert_eq!(csv_rows(&relay, &["--until", "1h"]).len(), 0);
    assert_eq!(csv_rows(&relay, &["--limit", "2"]).len(), 2);

    // The table and JSON say the same.
    let table = trace_ok(&relay, &["--recipient", "a@home.example"]);
    assert!(
        table.contains("deferred") && table.contains("team lunch"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&trace_ok(&relay, &["--json", "--status", "bounced"])).unwrap();
    assert_eq!(json[0]["recipient"], "bob@sender.test");

    // Every event of john's message, by queue id and by Message-ID.
    let shown = trace_ok(&relay, &["show", &john["queue_id"]]);
    for want in ["received", "delivered", "m1@sender.test", "hello, \"john\""] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    assert_eq!(trace_ok(&relay, &["show", "<m1@sender.test>"]), shown);
    let deferred = csv_rows(&relay, &["--recipient", "a@home.example"]);
    let shown = trace_ok(&relay, &["show", &deferred[0]["queue_id"]]);
    assert!(
        shown.contains("451 4.3.0") && shown.contains("what to do"),
        "{shown}"
    );

    let failed = csv_rows(&relay, &["--status", "failed"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["reply"].starts_with("550 5.1.1"), "{failed:?}");
    // The DSN's event follows the failure's (the DSN is spooled after it).
    let show = || trace_ok(&relay, &["show", &failed[0]["queue_id"]]);
    assert!(wait_until(Duration::from_secs(10), || show().contains("dsn_sent")));
    let shown = show();
    for want in ["failed", "dsn_sent", "dave@sender.test", "no such mailbox"] {
        assert!(shown.contains(want), "{want}: {shown}");
    }

    // Bad input: one line, non-zero.
    for bad in [
        &["--since", "yesterday"][..],
        &["--limit", "100001"],
        &["--status", "lost"],
    ] {
        let o = trace(&relay, bad);
        assert!(!o.status.success(), "{bad:?}");
        assert!(!o.stderr.is_empty(), "{bad:?}");
    }
    let o = trace(&relay, &["show", "NOSUCHID"]);
    assert_eq!(o.status.code(), Some(1));
    relay
}
