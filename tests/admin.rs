//! The admin listener and the queue alert end to end: the real binary relays over real
//! SMTP (delivered, deferred, failed, refused, a bounce reversed), then `/metrics` is
//! fetched over HTTP and parsed with a Prometheus text-format parser; `/healthz` and
//! `/readyz` answer (503 when the spool cannot be written); a backlog past
//! `alerts.queue_threshold` sends one alert mail, and one more when it drains.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use prometheus_parse::{Scrape, Value};

/// `GET path` over HTTP/1.1: status code and body.
fn get(port: u16, path: &str) -> (u16, String) {
    get_as(port, path, "")
}

/// `GET path` with extra header lines (each ending in CRLF).
fn get_as(port: u16, path: &str, headers: &str) -> (u16, String) {
    let (status, _, body) = http(port, "GET", path, headers, "");
    (status, body)
}

/// Every sample of `/metrics`, by metric name and its labels (`name{k="v"}`, labels
/// sorted); a histogram gives its total count.
fn scrape(relay: &Relay, port: u16) -> HashMap<String, f64> {
    let (status, body) = get_as(port, "/metrics", &bearer(relay));
    assert_eq!(status, 200, "{body}");
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(!parsed.samples.is_empty());
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let value = match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

/// The `Authorization` header line with the relay's admin password (its credentials
/// file, made on first start).
fn bearer(relay: &Relay) -> String {
    let path = relay.dir.path().join("admin-credentials");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("Authorization: Bearer {}\r\n", text.lines().next().unwrap())
}

fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn admin_section(port: u16) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n")
}

#[test]
fn metrics_count_what_was_relayed_with_the_trace_off() {
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
    let admin = free_port();
    let mut relay = Relay::prepare_full(
        "",
        &format!(
            "routes = {{ \"home.example\" = \"{}\", \"sender.test\" = \"{}\" }}\n",
            home.addr(),
            sender.addr()
        ),
        &format!(
            "[queue]\nretry_intervals = [\"1s\"]\n[trace]\nenabled = false\n{}",
            admin_section(admin)
        ),
    );
    let aliases = relay.dir.path().join("aliases");
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str("old@forward.example: gone@home.example\n");
    std::fs::write(&aliases, text).unwrap();
    relay.spawn();
    assert!(wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", admin)).is_ok()
    }));

    // Delivered through the alias, with an SRS sender (1 received, 1 forward).
    let send = |from: &str, to: &str| {
        swaks_ok(&["--server", &relay.addr(), "--from", from, "--to", to]);
    };
    send("bob@sender.test", "john@forward.example");
    assert!(wait_until(Duration::from_secs(20), || home.count() >= 1));
    let srs = home.messages()[0].mail_from.clone();
    // Deferred for a@, delivered for b@ (2 received, 2 forwards).
    send("carol@sender.test", "team@forward.example");
    // Refused at RCPT: a forged SRS address (a refused bounce).
    let (head, tail) = srs.split_once("SRS=").unwrap();
    let flipped = if tail.starts_with('A') { 'B' } else { 'A' };
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO probe.test");
    c.cmd("MAIL FROM:<>");
    let reply = c.cmd(&format!("RCPT TO:<{head}SRS={flipped}{}>", &tail[1..]));
    assert!(reply.starts_with("550"), "{reply}");
    c.cmd("QUIT");
    // A bounce to the real SRS address goes back to bob (1 received, 1 reverse).
    send("<>", &srs);
    // Failed for good at the next hop (1 received, 1 forward); a DSN goes to dave.
    send("dave@sender.test", "old@forward.example");
    // Refused at DATA: a mail loop.
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO loop.test");
    c.cmd("MAIL FROM:<eve@sender.test>");
    assert!(c.cmd("RCPT TO:<john@forward.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Received: from a\r\n".repeat(60).as_bytes());
    assert!(c.cmd("\r\nlooping\r\n.").starts_with("554 5.4.6"));
    c.cmd("QUIT");

    // john, b@, the reversed bounce and the DSN delivered; a@ deferred at least once.
    let settled = wait_until(Duration::from_secs(30), || {
        let m = scrape(&relay, admin);
        metric(&m, "srs_relay_delivered_recipients_total") >= 4.0
            && metric(&m, "srs_relay_deferred_recipients_total") >= 1.0
            && metric(&m, "srs_relay_queue_messages") == 1.0
    });
    let m = scrape(&relay, admin);
    assert!(settled, "{m:#?}\nlog:\n{}", relay.log());
    let exact = [
        ("srs_relay_received_recipients_total", 5.0),
        ("srs_relay_srs_forwards_total", 4.0),
        ("srs_relay_srs_reverses_total", 1.0),
        ("srs_relay_delivered_recipients_total", 4.0),
        (
            "srs_relay_failed_recipients_total{reason=\"permanent\"}",
            1.0,
        ),
        ("srs_relay_dsns_sent_total{kind=\"permanent\"}", 1.0),
        (
            "srs_relay_refused_recipients_total{reason=\"srs_invalid\"}",
            1.0,
        ),
        ("srs_relay_refused_recipients_total{reason=\"loop\"}", 1.0),
        ("srs_relay_refused_bounces_total{reason=\"invalid\"}", 1.0),
        // Four swaks sessions and two by hand, all plain.
        ("srs_relay_connections_in_total{tls=\"none\"}", 6.0),
        ("srs_relay_delivery_latency_seconds", 4.0),
        ("srs_relay_queue_messages", 1.0),
        ("srs_relay_queue_alert_active", 0.0),
        ("srs_relay_trace_events_dropped_total", 0.0),
    ];
    for (key, want) in exact {
        assert_eq!(metric(&m, key), want, "{key}: {m:#?}");
    }
    assert!(metric(&m, "srs_relay_connections_out_total{tls=\"none\"}") >= 1.0);
    assert!(m.contains_key("srs_relay_queue_oldest_age_seconds"));
    assert!(m.contains_key("srs_relay_queue_over_1h_messages"));
    assert!(m.contains_key("srs_relay_deliveries_in_flight"));
    // No address or domain anywhere in the exposition.
    let (_, body) = get_as(admin, "/metrics", &bearer(&relay));
    for private in ["example", "sender.test", "SRS="] {
        assert!(!body.contains(private), "{private} in /metrics:\n{body}");
    }
    assert!(relay.terminate().success());
}

#[test]
fn health_and_readiness() {
    let admin = free_port();
    let mut relay = Relay::start(&admin_section(admin));
    assert!(wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", admin)).is_ok()
    }));
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".into()));
    // Probes need no login; the rest does.
    assert_eq!(get(admin, "/metrics").0, 401);
    assert_eq!(get(admin, "/api/queue").0, 401);
    assert_eq!(get_as(admin, "/nothing-here", &bearer(&relay)).0, 404);

    // The queue directory replaced by a file: nothing can be spooled, even as root.
    let queue = relay.dir.path().join("spool/queue");
    let aside = relay.dir.path().join("spool/queue.aside");
    std::fs::rename(&queue, &aside).unwrap();
    std::fs::write(&queue, b"not a directory").unwrap();
    let (status, body) = get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: spool directory"), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert_eq!(get(admin, "/healthz").0, 200, "alive all the same");
    std::fs::remove_file(&queue).unwrap();
    std::fs::rename(&aside, &queue).unwrap();
    assert_eq!(get(admin, "/readyz").0, 200);

    assert!(relay.terminate().success());
    assert!(
        TcpStream::connect(("127.0.0.1", admin)).is_err(),
        "the admin listener stops with the relay"
    );
}

#[test]
fn check_config_rejects_bad_admin_and_alert_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[admin]\nlisten = \"localhost\"\n", "admin.listen"),
        ("[admin]\nlisten = \"127.0.0.1:99999\"\n", "admin.listen"),
        ("[alerts]\nnotify = \"postmaster\"\n", "alerts.notify"),
        (
            "[alerts]\nnotify = \"a@b.example, c@d.example\"\n",
            "alerts.notify",
        ),
        (
            "[alerts]\ncheck_interval = \"0s\"\n",
            "alerts.check_interval",
        ),
        ("[alerts]\nqueue_threshold = -1\n", "queue_threshold"),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, text).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args(["check-config", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(key), "{text}: {err}");
    }
    let cfg = dir.path().join("ok.toml");
    std::fs::write(
        &cfg,
        "[admin]\nlisten = \"\"\n[alerts]\nqueue_threshold = 10\nnotify = \"postmaster@ops.example\"\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn one_alert_mail_per_crossing_and_one_when_back_under() {
    let home = Receiver::start();
    let ops = Receiver::start();
    // The main destination holds everything back.
    home.script
        .lock()
        .unwrap()
        .rcpt
        .insert("@home.example".into(), "451 4.4.3 not now".into());
    let admin = free_port();
    let mut relay = Relay::prepare_full(
        "",
        &format!(
            "routes = {{ \"home.example\" = \"{}\", \"ops.example\" = \"{}\" }}\n",
            home.addr(),
            ops.addr()
        ),
        &format!(
            "[queue]\nretry_intervals = [\"1s\"]\n\
             [alerts]\nqueue_threshold = 3\nnotify = \"postmaster@ops.example\"\ncheck_interval = \"200ms\"\n{}",
            admin_section(admin)
        ),
    );
    relay.spawn();
    for i in 0..4 {
        swaks_ok(&[
            "--server",
            &relay.addr(),
            "--from",
            &format!("s{i}@sender.test"),
            "--to",
            "john@forward.example",
        ]);
    }
    // Four queued, more than three: one mail, delivered while home.example still refuses.
    assert!(
        wait_until(Duration::from_secs(20), || ops.count() >= 1),
        "no alert mail; log:\n{}",
        relay.log()
    );
    assert_eq!(
        metric(&scrape(&relay, admin), "srs_relay_queue_alert_active"),
        1.0
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ops.count(), 1, "one mail per crossing");
    let alert = ops.messages()[0].clone();
    assert_eq!(alert.mail_from, "", "null sender");
    assert_eq!(alert.rcpt_to, vec!["postmaster@ops.example".to_owned()]);
    let parsed = mail_parser::MessageParser::default()
        .parse(&alert.data[..])
        .unwrap();
    assert_eq!(
        parsed.subject(),
        Some("srs-relay queue alert on relay.test: 4 messages queued (threshold 3)")
    );
    assert!(parsed.date().is_some() && parsed.message_id().is_some());
    let text = parsed.body_text(0).unwrap().replace("\r\n", " ");
    for want in [
        "holds 4 messages",
        "home.example: 4 messages",
        "last error: 451 4.4.3 not now",
        "Oldest message: queue id",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    assert_eq!(home.count(), 0);

    // home.example takes mail again: the queue drains, one more mail says so.
    home.script.lock().unwrap().rcpt.clear();
    assert!(
        wait_until(Duration::from_secs(30), || ops.count() >= 2),
        "no back-under mail; log:\n{}",
        relay.log()
    );
    // The alert may clear with two still on their way (at 2 or fewer): all four arrive.
    assert!(wait_until(Duration::from_secs(20), || home.count() == 4));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ops.count(), 2, "one mail when back under");
    let cleared = ops.messages()[1].data.clone();
    let cleared = mail_parser::MessageParser::default()
        .parse(&cleared[..])
        .unwrap();
    assert!(
        cleared
            .subject()
            .unwrap()
            .starts_with("srs-relay queue back under threshold on relay.test"),
        "{:?}",
        cleared.subject()
    );
    assert_eq!(
        metric(&scrape(&relay, admin), "srs_relay_queue_alert_active"),
        0.0
    );
    let log = relay.log();
    assert_eq!(
        log.matches("queue alert: more messages queued").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("queue alert cleared").count(), 1, "{log}");

    // A second crossing: a second alert mail.
    home.script
        .lock()
        .unwrap()
        .rcpt
        .insert("@home.example".into(), "451 4.4.3 not now".into());
    for i in 4..8 {
        swaks_ok(&[
            "--server",
            &relay.addr(),
            "--from",
            &format!("s{i}@sender.test"),
            "--to",
            "john@forward.example",
        ]);
    }
    assert!(wait_until(Duration::from_secs(20), || ops.count() >= 3));
    let again = ops.messages()[2].data.clone();
    let again = mail_parser::MessageParser::default()
        .parse(&again[..])
        .unwrap();
    assert!(
        again
            .subject()
            .unwrap()
            .starts_with("srs-relay queue alert on")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ops.count(), 3, "one mail for the second crossing");
    assert!(relay.terminate().success());
}
