//! `srs-relay queue` against the real `serve`: list and show, then hold, retry, release,
//! delete and bounce through the control socket, with a receiver that refuses and then
//! accepts; a hold survives `kill -9`; with the relay stopped the same commands work on
//! the spool.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn queue(relay: &Relay, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .arg("queue")
        .args(args)
        .args(["--config", relay.config.to_str().unwrap()])
        .output()
        .unwrap()
}

fn queue_ok(relay: &Relay, args: &[&str]) -> String {
    let o = queue(relay, args);
    assert!(
        o.status.success(),
        "queue {args:?}: {}{}\nlog:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        relay.log()
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `queue list --json`, parsed.
fn list(relay: &Relay) -> Vec<serde_json::Value> {
    serde_json::from_str(&queue_ok(relay, &["list", "--json"])).unwrap()
}

fn entry<'a>(entries: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    entries.iter().find(|e| e["id"] == id)
}

/// Sends one message from `from` to the alias and returns its queue id.
fn send(relay: &Relay, from: &str, subject: &str) -> String {
    send_queued(relay, from, "john@forward.example", subject)
}

fn delivered_to(receiver: &Receiver, from_contains: &str) -> usize {
    receiver
        .messages()
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.data).contains(from_contains))
        .count()
}

fn relay_refusing(receiver: &Receiver) -> Relay {
    receiver
        .script
        .lock()
        .unwrap()
        .rcpt
        .insert("home.example".into(), "451 4.3.0 try again later".into());
    Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    )
}

#[test]
fn hold_retry_release_delete_and_bounce_through_the_running_relay() {
    let receiver = Receiver::start();
    let mut relay = relay_refusing(&receiver);
    let held = send(&relay, "held@example.org", "to be held");
    let deleted = send(&relay, "deleted@example.org", "to be deleted");
    let bounced = send(&relay, "bounced@example.org", "to be bounced");
    let retried = send(&relay, "retried@example.org", "to be retried");

    // Every message tried once and deferred: listed with its SRS sender and the reply.
    assert!(wait_until(Duration::from_secs(20), || {
        let l = list(&relay);
        l.len() == 4 && l.iter().all(|e| e["attempts"].as_u64() >= Some(1))
    }));
    let entries = list(&relay);
    let e = entry(&entries, &held).unwrap();
    assert_eq!(e["original_sender"], "held@example.org");
    assert!(e["sender"].as_str().unwrap().contains("SRS="), "{e}");
    assert_eq!(e["recipients"][0]["address"], "john@home.example");
    assert_eq!(e["recipients"][0]["original"], "john@forward.example");
    assert_eq!(e["recipients"][0]["state"], "pending");
    assert!(
        e["recipients"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("451 4.3.0")
    );
    let text = queue_ok(&relay, &["list"]);
    assert!(text.contains(&held) && text.contains("sent as") && text.contains("451 4.3.0"));
    assert!(text.contains("-- 4 messages, 0 on hold"), "{text}");

    // Hold: the message stays, is not attempted, and says so in the spool.
    let out = queue_ok(&relay, &["hold", &held]);
    assert_eq!(out.trim(), format!("{held}: held"));
    let state = std::fs::read_to_string(relay.dir.path().join(format!("spool/queue/{held}.state")))
        .unwrap();
    assert!(state.contains("\"held_since\""), "{state}");
    assert_eq!(entry(&list(&relay), &held).unwrap()["state"], "held");
    let again = queue_ok(&relay, &["hold", &held]);
    assert!(again.contains("unchanged: already on hold"), "{again}");

    // Delete: gone, no DSN.
    assert_eq!(
        queue_ok(&relay, &["delete", &deleted]).trim(),
        format!("{deleted}: deleted")
    );
    assert!(entry(&list(&relay), &deleted).is_none());
    assert!(
        !relay
            .dir
            .path()
            .join(format!("spool/queue/{deleted}.q"))
            .exists()
    );

    // Bounce: a DSN to the original sender saying the postmaster returned it.
    let out = queue_ok(&relay, &["bounce", &bounced]);
    assert_eq!(out.trim(), format!("{bounced}: returned to the sender"));
    assert!(wait_until(Duration::from_secs(10), || {
        receiver
            .messages()
            .iter()
            .any(|m| m.mail_from.is_empty() && m.rcpt_to == ["bounced@example.org"])
    }));
    let dsn = receiver
        .messages()
        .into_iter()
        .find(|m| m.rcpt_to == ["bounced@example.org"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&dsn.data).contains("returned to the sender by the postmaster")
    );

    // The receiver accepts now. The retried message goes at once (its next try was a
    // second away, after `retry_intervals = 1s` it is retried on its own too: so the
    // proof that matters is the held one, which never goes while held).
    receiver.script.lock().unwrap().rcpt.clear();
    let out = queue_ok(&relay, &["retry", "--all"]);
    assert!(
        out.contains(&format!("{held}: unchanged: on hold")),
        "{out}"
    );
    assert!(out.contains(&format!("{retried}: retry")), "{out}");
    assert!(wait_until(Duration::from_secs(10), || delivered_to(
        &receiver,
        "to be retried"
    ) == 1));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(delivered_to(&receiver, "to be held"), 0);
    assert_eq!(delivered_to(&receiver, "to be deleted"), 0);

    // `queue show`: envelope, header, history.
    let show = queue_ok(&relay, &["show", &held]);
    assert!(
        show.contains("held") && show.contains("Subject: to be held"),
        "{show}"
    );
    assert!(
        show.contains("history:") && show.contains("received"),
        "{show}"
    );

    // A hold survives kill -9; after the restart the message is still not sent.
    relay.kill9();
    relay.spawn();
    assert_eq!(entry(&list(&relay), &held).unwrap()["state"], "held");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(delivered_to(&receiver, "to be held"), 0);

    // Release: attempted at once and delivered.
    assert_eq!(
        queue_ok(&relay, &["release", &held]).trim(),
        format!("{held}: released")
    );
    assert!(wait_until(Duration::from_secs(10), || delivered_to(
        &receiver,
        "to be held"
    ) == 1));
    assert!(wait_until(Duration::from_secs(10), || list(&relay).is_empty()));

    // Unknown ids: named, exit 1.
    let o = queue(&relay, &["hold", "nosuchid"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nosuchid: not in the queue"));

    // Every action is a trace event (written within the writer's batch time) and a log
    // line.
    let trace = || {
        let o = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args([
                "trace",
                "show",
                &held,
                "--config",
                relay.config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let kinds = ["  held ", "  released ", "  delivered "];
    assert!(
        wait_until(Duration::from_secs(5), || {
            let t = trace();
            kinds.iter().all(|k| t.contains(k))
        }),
        "{kinds:?} in:\n{}",
        trace()
    );
    let log = relay.log();
    assert!(
        log.contains(&format!("queue_id={deleted} action=\"delete\" by=\"uid")),
        "{log}"
    );

    // The control socket is the relay's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(relay.dir.path().join("spool/control"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn hold_by_domain_then_release_all() {
    let receiver = Receiver::start();
    let relay = relay_refusing(&receiver);
    let a = send(&relay, "a@example.org", "a");
    let b = send(&relay, "b@example.org", "b");
    let out = queue_ok(&relay, &["hold", "--domain", "HOME.example"]);
    assert!(
        out.contains(&format!("{a}: ")) && out.contains(&format!("{b}: ")),
        "{out}"
    );
    let none = queue_ok(&relay, &["hold", "--domain", "elsewhere.example"]);
    assert!(none.contains("no message matched"), "{none}");
    assert!(wait_until(Duration::from_secs(10), || list(&relay)
        .iter()
        .all(|e| e["state"] == "held")));
    receiver.script.lock().unwrap().rcpt.clear();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.count(), 0);
    let out = queue_ok(&relay, &["release", "--all"]);
    assert!(out.contains(&format!("{a}: released")), "{out}");
    assert!(wait_until(Duration::from_secs(10), || receiver.count() == 2));
}

#[test]
fn with_the_relay_stopped_the_commands_work_on_the_spool() {
    let receiver = Receiver::start();
    let mut relay = relay_refusing(&receiver);
    let held = send(&relay, "held@example.org", "held offline");
    let bounced = send(&relay, "bounced@example.org", "bounced offline");
    let kept = send(&relay, "kept@example.org", "kept offline");
    assert!(relay.terminate().success());

    let entries = list(&relay);
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e["state"] == "waiting"));
    // Each action is a log line here too: the command's own, on stderr.
    let o = queue(&relay, &["hold", &held]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("{held}: held")
    );
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains(&format!(
            "event=\"queue_action\" queue_id={held} action=\"hold\" by=\"uid"
        )) && log.contains("(relay stopped)"),
        "{log}"
    );
    assert_eq!(
        queue_ok(&relay, &["bounce", &bounced]).trim(),
        format!("{bounced}: returned to the sender")
    );
    let o = queue(&relay, &["delete", "nosuchid"]);
    assert_eq!(o.status.code(), Some(1));
    let entries = list(&relay);
    assert_eq!(entry(&entries, &held).unwrap()["state"], "held");
    assert!(entry(&entries, &bounced).is_none());
    // The DSN waits in the spool for the relay.
    assert!(
        entries.iter().any(|e| e["original_sender"] == ""),
        "{entries:?}"
    );
    let show = queue_ok(&relay, &["show", &kept]);
    assert!(show.contains("Subject: kept offline"), "{show}");

    receiver.script.lock().unwrap().rcpt.clear();
    relay.spawn();
    assert!(wait_until(Duration::from_secs(10), || delivered_to(
        &receiver,
        "kept offline"
    ) == 1
        && receiver
            .messages()
            .iter()
            .any(|m| m.rcpt_to == ["bounced@example.org"])));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered_to(&receiver, "held offline"), 0);
    assert_eq!(entry(&list(&relay), &held).unwrap()["state"], "held");
}

#[test]
fn a_hold_asked_during_an_attempt_follows_it_and_the_message_is_not_sent() {
    let receiver = Receiver::start();
    {
        let mut s = receiver.script.lock().unwrap();
        s.data = "451 4.3.0 not now".into();
        s.data_delay = Duration::from_secs(2);
    }
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    );
    let id = send(&relay, "during@example.org", "held during an attempt");
    assert!(wait_until(Duration::from_secs(10), || {
        entry(&list(&relay), &id).is_some_and(|e| e["state"] == "active")
    }));
    let out = queue_ok(&relay, &["hold", &id]);
    assert!(
        out.contains("being attempted now: held when the attempt ends"),
        "{out}"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        entry(&list(&relay), &id).is_some_and(|e| e["state"] == "held")
    }));
    {
        let mut s = receiver.script.lock().unwrap();
        s.data = "250 2.0.0 queued".into();
        s.data_delay = Duration::ZERO;
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.count(), 0);
    let e = list(&relay);
    assert_eq!(entry(&e, &id).unwrap()["attempts"], 1);
    queue_ok(&relay, &["release", &id]);
    assert!(wait_until(Duration::from_secs(10), || receiver.count() == 1));
}
