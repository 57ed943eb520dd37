//! The message trace end to end with the SQLite store (the scenario is in
//! tests/trace_scenario, shared with tests/trace_postgres.rs), and a store that cannot open.

mod common;
mod trace_scenario;

use std::time::Duration;

use common::*;
use trace_scenario::*;

#[test]
fn trace_finds_delivered_deferred_refused_and_reversed_mail() {
    trace_finds_every_outcome("");
}

#[test]
fn a_trace_store_that_cannot_open_drops_events_and_mail_still_flows() {
    let home = Receiver::start();
    let mut relay = Relay::prepare_full(
        "",
        &format!("routes = {{ \"home.example\" = \"{}\" }}\n", home.addr()),
        "[trace]\nstore = \"blocker/trace.sqlite\"\n",
    );
    // A file where the store's directory should be: the store never opens.
    std::fs::write(relay.dir.path().join("blocker"), "not a directory").unwrap();
    relay.spawn();
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "bob@sender.test",
        "--to",
        "john@forward.example",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || home.count() >= 1),
        "not relayed; log:\n{}",
        relay.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || relay
            .log()
            .contains("trace events dropped")),
        "no drop warning; log:\n{}",
        relay.log()
    );
    assert!(relay.log().contains("cannot open the trace store"));
    let o = trace(&relay, &["--recipient", "john@home.example"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("trace.sqlite"));
}
