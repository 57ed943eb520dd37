//! The message trace in PostgreSQL, end to end: a private server (tests/common/postgres.rs)
//! and the real binary over real SMTP. Every outcome is found (the scenario shared with
//! the SQLite test), two relays write one database, and a server that stops mid-run only
//! costs trace events: mail still flows, drops are counted, and writing resumes when the
//! server is back. The password never shows in a log or an error.

mod common;
mod trace_scenario;

use std::time::Duration;

use common::postgres::{PASSWORD, PgServer};
use common::*;
use trace_scenario::*;

fn trace_section(pg: &PgServer) -> String {
    format!("[trace]\nstore = \"{}\"\n", pg.url())
}

/// A relay routing home.example to `home`, its trace in `pg`.
fn relay(home: &Receiver, pg: &PgServer) -> Relay {
    Relay::start_full(
        "",
        &format!("routes = {{ \"home.example\" = \"{}\" }}\n", home.addr()),
        &trace_section(pg),
    )
}

/// Sends one message to john@forward.example with Message-ID `<id@sender.test>`.
fn send(relay: &Relay, id: &str) {
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "bob@sender.test",
        "--to",
        "john@forward.example",
        "--header",
        &format!("Message-Id: <{id}@sender.test>"),
    ]);
}

/// The rows `srs-relay trace --message-id` finds for `id`.
fn rows(relay: &Relay, id: &str) -> Vec<std::collections::HashMap<String, String>> {
    csv_rows(relay, &["--message-id", &format!("{id}@sender.test")])
}

fn wait_delivered(relay: &Relay, id: &str) {
    // Until the relay's first event, the table may not be there yet.
    let found = wait_until(Duration::from_secs(20), || {
        trace(relay, &["--message-id", &format!("{id}@sender.test")])
            .status
            .success()
            && rows(relay, id).iter().any(|r| r["status"] == "delivered")
    });
    assert!(
        found,
        "{id}: not traced as delivered; log:\n{}",
        relay.log()
    );
}

fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password:\n{text}"
    );
}

#[test]
fn postgres_trace_finds_every_outcome() {
    let pg = PgServer::start();
    let relay = trace_finds_every_outcome(&trace_section(&pg));
    // Stored in the server, not in a file next to the spool.
    assert!(!relay.dir.path().join("trace.sqlite").exists());
    // The seven rows `trace --since 1h` found (five received, two refused).
    let rows = "SELECT count(*) FROM trace_events WHERE kind IN ('received', 'refused')";
    assert_eq!(pg.query_value(rows), "7");
    let log = relay.log();
    assert!(log.contains("postgres:***@127.0.0.1"), "{log}");
    assert_no_password("the relay's log", &log);
}

#[test]
fn two_relays_write_one_database() {
    let pg = PgServer::start();
    let home = Receiver::start();
    let (a, b) = (relay(&home, &pg), relay(&home, &pg));
    send(&a, "via-a");
    send(&b, "via-b");
    // Each relay's `trace` sees both: one shared trace.
    for r in [&a, &b] {
        wait_delivered(r, "via-a");
        wait_delivered(r, "via-b");
    }
    let (ra, rb) = (rows(&a, "via-a"), rows(&a, "via-b"));
    assert_ne!(ra[0]["queue_id"], rb[0]["queue_id"]);
    let all = csv_rows(&b, &["--recipient", "john@home.example"]);
    assert_eq!(all.len(), 2, "{all:?}");
    let shown = trace_ok(&b, &["show", &ra[0]["queue_id"]]);
    assert!(shown.contains("via-a@sender.test") && shown.contains("delivered"));
}

#[test]
fn a_postgres_server_that_stops_costs_only_trace_events() {
    let mut pg = PgServer::start();
    let home = Receiver::start();
    let relay = relay(&home, &pg);
    send(&relay, "before");
    wait_delivered(&relay, "before");

    pg.stop();
    send(&relay, "during");
    assert!(
        wait_until(Duration::from_secs(20), || home.count() >= 2),
        "not relayed while the trace store was down; log:\n{}",
        relay.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || relay
            .log()
            .contains("trace events dropped")),
        "no drop warning; log:\n{}",
        relay.log()
    );
    // The CLI says why in one line, without the password.
    let o = trace(&relay, &["--message-id", "before@sender.test"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("postgres:***@127.0.0.1") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_no_password("trace's error", &err);

    assert!(pg.start_again(), "restart: {}", pg.log());
    // The writer tries again 5 s after its last failure; later events are stored.
    std::thread::sleep(Duration::from_secs(6));
    send(&relay, "after");
    wait_delivered(&relay, "after");
    assert!(home.count() >= 3);
    // What was written before the stop survived it; what came during it was dropped.
    assert_eq!(rows(&relay, "before").len(), 1);
    assert!(rows(&relay, "during").is_empty());
    let log = relay.log();
    assert!(log.contains("cannot write the trace") || log.contains("cannot open the trace store"));
    assert_no_password("the relay's log", &log);
}

#[test]
fn the_trace_goes_over_tls_when_asked_and_checks_the_certificate() {
    let mut pg = PgServer::start();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = srs_relay::tls::generate_self_signed("127.0.0.1", certs.path()).unwrap();
    pg.enable_tls(&cert, &key);
    let home = Receiver::start();
    let store = |root: &std::path::Path| {
        format!(
            "[trace]\nstore = \"{}?sslmode=require&sslrootcert={}\"\n",
            pg.url(),
            root.display()
        )
    };
    let routes = format!("routes = {{ \"home.example\" = \"{}\" }}\n", home.addr());
    let relay = Relay::start_full("", &routes, &store(&cert));
    send(&relay, "over-tls");
    wait_delivered(&relay, "over-tls");
    // The relay's connection is encrypted (and so was the CLI's, if it still shows).
    let ssl = "SELECT count(*) > 0 AND bool_and(s.ssl) FROM pg_stat_ssl s \
               JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'srs-relay'";
    assert_eq!(pg.query_value(ssl), "t");

    // A relay trusting another certificate does not talk to this server; mail still flows.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, _) = srs_relay::tls::generate_self_signed("127.0.0.1", other.path()).unwrap();
    let wrong = Relay::start_full("", &routes, &store(&other_cert));
    send(&wrong, "wrong-ca");
    assert!(wait_until(Duration::from_secs(20), || home.count() >= 2));
    assert!(
        wait_until(Duration::from_secs(10), || wrong
            .log()
            .contains("trace events dropped")),
        "no drop warning; log:\n{}",
        wrong.log()
    );
    let log = wrong.log();
    assert!(
        log.contains("cannot open the trace store") && log.contains("certificate"),
        "{log}"
    );
    assert_no_password("the relay's log", &log);
    assert!(rows(&relay, "wrong-ca").is_empty());
}

#[test]
fn check_config_refuses_a_malformed_postgres_url_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (store, why) in [
        ("postgres://trace:s3cret@db.example:fivefour/trace", "port"),
        ("postgres://trace:s3cret@db.example", "database"),
        (
            "postgresql://trace:s3cret@db.example/trace?sslmode=require",
            "sslrootcert",
        ),
        (
            "postgres://trace:s3cret@db.example/trace?colour=blue",
            "colour",
        ),
    ] {
        let config = dir.path().join("c.toml");
        std::fs::write(&config, format!("[trace]\nstore = \"{store}\"\n")).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{store}: {err}");
        assert!(
            err.contains("trace.store") && err.contains(why) && err.trim().lines().count() == 1,
            "{store}: {err}"
        );
        assert!(!err.contains("s3cret"), "{store}: {err}");
    }
}
