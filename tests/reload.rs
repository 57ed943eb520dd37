//! Reload on SIGHUP, end to end: the real binary under load from several concurrent
//! sessions while its aliases change, secrets rotated, files that do not parse refused,
//! a restart-only key named, the STARTTLS certificate swapped, and the lookup services
//! (`srs-relay socketmap`) reloaded. Loopback only; every wait is bounded.

mod lookup;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookup::common::*;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use srs_relay::Srs;
use srs_relay::config::Config;

/// What the relay logs when a reload is put in force, and when it is refused.
const RELOADED: &str = "reloaded config=";
const REFUSED: &str = "reload refused";

/// Sends SIGHUP to `pid` and waits until `log` shows the reload's outcome; returns what
/// was logged from the signal on.
fn hup(pid: u32, log: impl Fn() -> String) -> String {
    // Whole lines only: a line being written may be read in part.
    let log = || {
        let mut text = log();
        text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
        text
    };
    let outcomes = |text: &str| text.matches(RELOADED).count() + text.matches(REFUSED).count();
    let before = log();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = wait_until(Duration::from_secs(20), || {
        outcomes(&log()) > outcomes(&before)
    });
    let after = log();
    assert!(done, "no reload outcome logged:\n{after}");
    after[before.len()..].to_owned()
}

fn reload(relay: &Relay) -> String {
    hup(relay.pid(), || relay.log())
}

fn aliases(relay: &Relay) -> std::path::PathBuf {
    relay.dir.path().join("aliases")
}

fn add_alias(relay: &Relay, line: &str) {
    let mut text = std::fs::read_to_string(aliases(relay)).unwrap();
    text.push_str(line);
    text.push('\n');
    std::fs::write(aliases(relay), text).unwrap();
}

fn edit_config(relay: &Relay, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&relay.config).unwrap();
    std::fs::write(&relay.config, edit(text)).unwrap();
}

/// The reply to RCPT TO `to` in a new session.
fn rcpt_reply(addr: &str, to: &str) -> String {
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<bob@sender.example>").starts_with("250"));
    let reply = c.cmd(&format!("RCPT TO:<{to}>"));
    c.cmd("QUIT");
    reply
}

/// A relay with the harness's aliases, delivering to `receiver`, retrying every second.
fn relay_to(receiver: &Receiver) -> Relay {
    Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    )
}

/// Sends one message in a session of its own; the reply to the final dot.
fn send_one(addr: &str, from: &str, to: &str, id: &str) -> String {
    let mut s = Session::open(addr, Duration::from_secs(20)).unwrap();
    let outcome = s.send(from, to, &numbered_message(id, 500)).unwrap();
    s.quit();
    match outcome {
        Outcome::Reply(r) => r,
        other => panic!("{id}: {other:?}"),
    }
}

#[test]
fn under_load_nothing_fails_nothing_is_lost_and_a_new_alias_works_at_once() {
    let receiver = Receiver::start();
    let relay = relay_to(&receiver);
    let addr = relay.addr();
    let new_alias = "new@forward.example";
    assert!(rcpt_reply(&addr, new_alias).starts_with("550 5.1.1"));
    // A session that starts before the reload and is still open after it.
    let mut before = Client::connect(&addr);
    before.cmd("EHLO client.test");
    assert!(
        before
            .cmd("MAIL FROM:<bob@sender.example>")
            .starts_with("250")
    );

    // Four clients send one message after another, five per session, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, accepted, failures) = (stop.clone(), accepted.clone(), failures.clone());
            let addr = addr.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(90);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && n < 500 && Instant::now() < deadline {
                    let mut s = match Session::open(&addr, Duration::from_secs(20)) {
                        Ok(s) => s,
                        Err(e) => {
                            failures.lock().unwrap().push(format!("connect: {e}"));
                            return;
                        }
                    };
                    for _ in 0..5 {
                        let id = format!("load-{t}-{n}");
                        n += 1;
                        let message = numbered_message(&id, 2000);
                        match s.send("bob@sender.example", "john@forward.example", &message) {
                            Ok(Outcome::Reply(r)) if r.starts_with("250") => {
                                accepted.lock().unwrap().push(id)
                            }
                            other => failures.lock().unwrap().push(format!("{id}: {other:?}")),
                        }
                    }
                    s.quit();
                }
            })
        })
        .collect();
    let accepted_now = || accepted.lock().unwrap().len();
    assert!(
        wait_until(Duration::from_secs(30), || accepted_now() >= 40),
        "load did not get going: {:?}",
        failures.lock().unwrap()
    );

    add_alias(&relay, &format!("{new_alias}: new@home.example"));
    let log = reload(&relay);
    assert!(log.contains(RELOADED) && !log.contains(REFUSED), "{log}");
    // Right after the reload: a new session knows the new alias.
    let reply = send_one(&addr, "bob@sender.example", new_alias, "new-alias");
    assert!(reply.starts_with("250"), "{reply}");
    // The session open since before keeps what it started with.
    let reply = before.cmd(&format!("RCPT TO:<{new_alias}>"));
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    assert!(before.cmd("QUIT").starts_with("221"));

    // The load goes on after the reload, then stops.
    let at_reload = accepted_now();
    let went_on = wait_until(Duration::from_secs(30), || accepted_now() >= at_reload + 40);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert!(went_on, "the load stalled after the reload");
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "sessions failed: {failures:?}\n{}",
        relay.log()
    );

    // Every accepted message arrives, exactly once; so does the one to the new alias.
    let accepted = accepted.lock().unwrap().clone();
    let all = wait_until(Duration::from_secs(60), || {
        receiver.count() > accepted.len()
    });
    assert!(
        all,
        "{} of {} delivered",
        receiver.count(),
        accepted.len() + 1
    );
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show by now
    let mut seen: HashMap<String, Vec<Received>> = HashMap::new();
    for m in receiver.messages() {
        let id = message_id(&m.data).expect("a Message-ID");
        seen.entry(id).or_default().push(m);
    }
    for id in &accepted {
        let got = seen.get(id).map_or(0, Vec::len);
        assert_eq!(got, 1, "{id} delivered {got} times");
        assert_eq!(seen[id][0].rcpt_to, ["john@home.example"]);
    }
    assert_eq!(seen.len(), accepted.len() + 1, "unexpected messages");
    assert_eq!(seen["new-alias"][0].rcpt_to, ["new@home.example"]);
}

#[test]
fn a_new_first_secret_signs_from_then_on_and_older_addresses_still_reverse() {
    let receiver = Receiver::start();
    let relay = relay_to(&receiver);
    let addr = relay.addr();
    let sender_of = |id: &str| {
        assert!(
            wait_until(Duration::from_secs(20), || receiver
                .messages()
                .iter()
                .any(|m| message_id(&m.data).as_deref() == Some(id))),
            "{id} not delivered"
        );
        receiver
            .messages()
            .into_iter()
            .find(|m| message_id(&m.data).as_deref() == Some(id))
            .unwrap()
            .mail_from
    };
    assert!(
        send_one(
            &addr,
            "bob@sender.example",
            "john@forward.example",
            "before"
        )
        .starts_with("250")
    );
    let old = sender_of("before");

    let new_secret = "the-new-secret-after-rotation";
    let secrets = relay.dir.path().join("secrets");
    let text = std::fs::read_to_string(&secrets).unwrap();
    std::fs::write(&secrets, format!("{new_secret}\n{text}")).unwrap();
    let log = reload(&relay);
    assert!(log.contains(RELOADED) && log.contains("secrets=2"), "{log}");
    assert!(
        send_one(&addr, "bob@sender.example", "john@forward.example", "after").starts_with("250")
    );
    let new = sender_of("after");
    assert_ne!(old, new);

    // The new address is signed with the new secret, the old one with the old.
    let options = Config::load(Some(&relay.config))
        .unwrap()
        .srs
        .options()
        .unwrap();
    let only_new = Srs::new(&[new_secret], options.clone()).unwrap();
    let only_old = Srs::new(&[SECRET], options).unwrap();
    assert_eq!(only_new.reverse(&new).unwrap(), "bob@sender.example");
    assert!(
        only_new.reverse(&old).is_err(),
        "{old} verified with the new secret"
    );
    assert_eq!(only_old.reverse(&old).unwrap(), "bob@sender.example");

    // The relay still takes bounces to both, back to the original sender.
    for (to, id) in [(&old, "bounce-old"), (&new, "bounce-new")] {
        let reply = send_one(&addr, "", to, id);
        assert!(reply.starts_with("250"), "{to}: {reply}");
        sender_of(id);
    }
    let back = receiver
        .messages()
        .into_iter()
        .filter(|m| m.mail_from.is_empty())
        .map(|m| m.rcpt_to)
        .collect::<Vec<_>>();
    assert_eq!(back, [["bob@sender.example"], ["bob@sender.example"]]);
    // A forged one is still refused.
    let forged = new.replacen("SRS=", "SRS=x", 1);
    assert!(rcpt_reply(&addr, &forged).starts_with("550"));
}

#[test]
fn a_file_that_does_not_parse_is_refused_naming_the_key_or_line_and_the_old_settings_stay() {
    let relay = Relay::start("");
    let addr = relay.addr();
    let new_alias = "new@forward.example";
    let original_aliases = std::fs::read_to_string(aliases(&relay)).unwrap();
    let original_config = std::fs::read_to_string(&relay.config).unwrap();
    let old_settings_stay = || {
        assert!(rcpt_reply(&addr, "john@forward.example").starts_with("250"));
        assert!(rcpt_reply(&addr, new_alias).starts_with("550 5.1.1"));
    };

    // The aliases file: a line without a colon, after a new alias.
    add_alias(&relay, &format!("{new_alias}: new@home.example"));
    add_alias(&relay, "this line has no colon");
    let log = reload(&relay);
    let path = aliases(&relay);
    assert!(
        log.contains(REFUSED)
            && log.contains("relay.aliases_file")
            && log.contains(&format!("{}:4:", path.display()))
            && !log.contains(RELOADED),
        "{log}"
    );
    old_settings_stay();
    std::fs::write(&path, &original_aliases).unwrap();

    // A key with a value out of range.
    edit_config(&relay, |c| {
        c.replace("[spool]", "max_line_length = 100\n[spool]")
    });
    let log = reload(&relay);
    assert!(
        log.contains(REFUSED) && log.contains("server.max_line_length"),
        "{log}"
    );
    old_settings_stay();

    // TOML that does not parse: its line is named.
    edit_config(&relay, |_| format!("{original_config}[relay\n"));
    let log = reload(&relay);
    let last_line = original_config.lines().count() + 1;
    assert!(
        log.contains(REFUSED) && log.contains(&format!("line {last_line}")),
        "{log}"
    );
    old_settings_stay();

    // The secrets file gone.
    std::fs::write(&relay.config, &original_config).unwrap();
    let secrets = relay.dir.path().join("secrets");
    std::fs::rename(&secrets, relay.dir.path().join("secrets.away")).unwrap();
    let log = reload(&relay);
    assert!(
        log.contains(REFUSED) && log.contains("srs.secrets_file"),
        "{log}"
    );
    old_settings_stay();

    // All fixed, with the new alias: reloaded.
    std::fs::rename(relay.dir.path().join("secrets.away"), &secrets).unwrap();
    add_alias(&relay, &format!("{new_alias}: new@home.example"));
    let log = reload(&relay);
    assert!(log.contains(RELOADED), "{log}");
    assert!(rcpt_reply(&addr, new_alias).starts_with("250"));
}

#[test]
fn a_changed_listen_address_is_named_as_needing_a_restart_and_the_rest_reloads() {
    let mut relay = Relay::start("");
    let addr = relay.addr();
    let other = free_port();
    let port = relay.port;
    edit_config(&relay, |c| {
        c.replace(
            &format!("listen = [\"127.0.0.1:{port}\"]"),
            &format!("listen = [\"127.0.0.1:{other}\"]"),
        )
        .replace("[spool]", "max_recipients = 1\n[spool]")
    });
    add_alias(&relay, "new@forward.example: new@home.example");
    let log = reload(&relay);
    let warning = log
        .lines()
        .find(|l| l.contains("only after a restart"))
        .unwrap_or_else(|| panic!("no restart warning:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.ends_with("keys=server.listen"),
        "{warning}"
    );
    assert!(
        log.contains(RELOADED) && log.contains("changed=server"),
        "{log}"
    );
    // Still on the old address; the other keys are in force.
    assert!(TcpStream::connect(("127.0.0.1", other)).is_err());
    assert!(rcpt_reply(&addr, "new@forward.example").starts_with("250"));
    let mut c = Client::connect(&addr);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<bob@sender.example>");
    assert!(c.cmd("RCPT TO:<john@forward.example>").starts_with("250"));
    let second = c.cmd("RCPT TO:<team@forward.example>");
    assert!(second.starts_with("452"), "max_recipients = 1: {second}");
    // Still named at the next reload: the process still listens where it started.
    let log = reload(&relay);
    assert!(
        log.lines().any(|l| l.ends_with("keys=server.listen")),
        "{log}"
    );
    assert!(relay.is_running());
}

#[test]
fn a_new_smarthost_and_route_take_the_next_delivery() {
    let (a, b, c) = (Receiver::start(), Receiver::start(), Receiver::start());
    let relay = relay_to(&a);
    let addr = relay.addr();
    let delivered_to = |r: &Receiver, id: &str| {
        wait_until(Duration::from_secs(20), || {
            r.messages()
                .iter()
                .any(|m| message_id(&m.data).as_deref() == Some(id))
        })
    };
    assert!(
        send_one(&addr, "bob@sender.example", "john@forward.example", "first").starts_with("250")
    );
    assert!(delivered_to(&a, "first"));

    // Everything to b from now on, but home.example's second alias target to c.
    edit_config(&relay, |cfg| {
        cfg.replace(
            &format!("smarthost = \"{}\"", a.addr()),
            &format!(
                "smarthost = \"{}\"\n[relay.routes]\n\"b.home.example\" = \"{}\"",
                b.addr(),
                c.addr()
            ),
        )
    });
    add_alias(
        &relay,
        "split@forward.example: x@home.example, y@b.home.example",
    );
    let log = reload(&relay);
    assert!(
        log.contains(RELOADED) && log.contains("changed=relay"),
        "{log}"
    );
    // Right after: the next message goes the new ways, none of it to a.
    assert!(
        send_one(
            &addr,
            "bob@sender.example",
            "split@forward.example",
            "second"
        )
        .starts_with("250")
    );
    assert!(delivered_to(&b, "second") && delivered_to(&c, "second"));
    assert!(
        !a.messages()
            .iter()
            .any(|m| message_id(&m.data).as_deref() == Some("second"))
    );
    let to = |r: &Receiver| {
        r.messages()
            .into_iter()
            .filter(|m| message_id(&m.data).as_deref() == Some("second"))
            .flat_map(|m| m.rcpt_to)
            .collect::<Vec<_>>()
    };
    assert_eq!(to(&b), ["x@home.example"]);
    assert_eq!(to(&c), ["y@b.home.example"]);
}

/// `[dns]` reloads for delivery as well: after the reload, the MX lookups of the next
/// attempt go to the new name server. Two dnsmasq on loopback give `home.example`
/// different MX hosts, neither with an address, so each attempt is deferred naming the
/// host its server gave (and nothing connects anywhere).
#[test]
fn new_name_servers_take_the_next_delivery() {
    use lookup::common::mailauth::Dns;
    let a = Dns::start_with(&[], &["--mx-host=home.example,mx-a.example,10"]);
    let b = Dns::start_with(&[], &["--mx-host=home.example,mx-b.example,10"]);
    let relay = Relay::start_full("", "", &a.relay_config());
    let addr = relay.addr();
    let deferred_via = |log: &str, host: &str| {
        log.lines()
            .any(|l| l.contains("event=\"deferred\"") && l.contains(host))
    };
    assert!(
        send_one(&addr, "bob@sender.example", "john@forward.example", "first").starts_with("250")
    );
    assert!(
        wait_until(Duration::from_secs(20), || deferred_via(
            &relay.log(),
            "mx-a.example"
        )),
        "{}",
        relay.log()
    );
    edit_config(&relay, |cfg| {
        cfg.replace(
            &format!("127.0.0.1:{}", a.port),
            &format!("127.0.0.1:{}", b.port),
        )
    });
    let log = reload(&relay);
    assert!(log.contains(RELOADED) && log.contains("dns"), "{log}");
    assert!(!log.contains("only after a restart"), "{log}");
    let mark = relay.log().len();
    assert!(
        send_one(
            &addr,
            "bob@sender.example",
            "john@forward.example",
            "second"
        )
        .starts_with("250")
    );
    assert!(
        wait_until(Duration::from_secs(20), || deferred_via(
            &relay.log()[mark..],
            "mx-b.example"
        )),
        "{}",
        relay.log()
    );
    assert!(
        !deferred_via(&relay.log()[mark..], "mx-a.example"),
        "{}",
        relay.log()
    );
}

#[test]
fn outbound_tls_required_by_a_reload_holds_for_a_session_already_open() {
    let receiver = Receiver::start(); // offers no STARTTLS
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "[queue]\nretry_intervals = [\"1s\"]\nconnection_cache_time = \"60s\"\n",
    );
    let addr = relay.addr();
    assert!(
        send_one(&addr, "bob@sender.example", "john@forward.example", "plain").starts_with("250")
    );
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 1));
    // Its session to the receiver now waits in the connection cache, without TLS.
    edit_config(&relay, |c| c + "[tls]\nrequire_outbound = true\n");
    let log = reload(&relay);
    assert!(
        log.contains(RELOADED) && log.contains("changed=tls"),
        "{log}"
    );
    assert!(
        send_one(
            &addr,
            "bob@sender.example",
            "john@forward.example",
            "needs-tls"
        )
        .starts_with("250")
    );
    let deferred = wait_until(Duration::from_secs(20), || {
        relay.log().contains("did not offer STARTTLS")
    });
    assert!(deferred, "{}", relay.log());
    assert_eq!(receiver.count(), 1, "delivered without TLS");
}

/// The certificate a new STARTTLS session on `c` is shown (its first one, DER).
fn starttls_certificate(mut c: Client) -> Vec<u8> {
    assert!(c.cmd("STARTTLS").starts_with("220"));
    let conn = rustls::ClientConnection::new(
        tls_client_trusting_any(&[&rustls::version::TLS13]),
        "relay.test".try_into().unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c.w.try_clone().unwrap());
    let end = Instant::now() + Duration::from_secs(10);
    while tls.conn.is_handshaking() {
        assert!(Instant::now() < end, "TLS handshake did not finish");
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls.conn.peer_certificates().unwrap()[0].to_vec()
}

fn new_session(addr: &str) -> Client {
    let mut c = Client::connect(addr);
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    c
}

fn certificate_in(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

#[test]
fn a_new_certificate_is_shown_to_new_sessions_only() {
    let mut relay = Relay::prepare_full(
        "",
        "",
        "[tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n",
    );
    let live = relay.dir.path().join("tls");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cert_a, key_a) = srs_relay::tls::generate_self_signed("a.relay.test", a.path()).unwrap();
    let (cert_b, key_b) = srs_relay::tls::generate_self_signed("b.relay.test", b.path()).unwrap();
    std::fs::create_dir(&live).unwrap();
    std::fs::copy(&cert_a, live.join("cert.pem")).unwrap();
    std::fs::copy(&key_a, live.join("key.pem")).unwrap();
    relay.spawn();
    let addr = relay.addr();
    assert_eq!(
        starttls_certificate(new_session(&addr)),
        certificate_in(&cert_a)
    );

    // A session that said EHLO before the reload goes on with what it was offered.
    let before = new_session(&addr);
    std::fs::copy(&cert_b, live.join("cert.pem")).unwrap();
    std::fs::copy(&key_b, live.join("key.pem")).unwrap();
    let log = reload(&relay);
    assert!(log.contains(RELOADED), "{log}");
    assert_eq!(
        starttls_certificate(new_session(&addr)),
        certificate_in(&cert_b)
    );
    assert_eq!(starttls_certificate(before), certificate_in(&cert_a));

    // A key that does not parse: refused, and the certificate in force stays.
    std::fs::write(live.join("key.pem"), "not a key\n").unwrap();
    let log = reload(&relay);
    assert!(log.contains(REFUSED) && log.contains("tls.key"), "{log}");
    assert_eq!(
        starttls_certificate(new_session(&addr)),
        certificate_in(&cert_b)
    );
}

#[test]
fn the_lookup_service_reloads_its_secrets_and_rules() {
    let l = lookup::Lookups::start("", "");
    // One connection, open across the reload, as Postfix keeps them.
    let mut c = l.socketmap_client();
    let old = c
        .query("forward", "bob@example.org")
        .strip_prefix("OK ")
        .expect("forwarded")
        .to_owned();

    let new_secret = "the-new-lookup-secret";
    let text = std::fs::read_to_string(l.secrets()).unwrap();
    std::fs::write(l.secrets(), format!("{new_secret}\n{text}")).unwrap();
    let cfg = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(
        &l.config,
        cfg.replace(
            "[socketmap]\n",
            "[socketmap]\nexclude_domains = [\"example.org\"]\n",
        ),
    )
    .unwrap();
    let log = hup(l.pid(), || l.log());
    assert!(log.contains(RELOADED), "{log}");

    // Excluded from now on; other senders signed with the new secret.
    assert_eq!(c.query("forward", "bob@example.org"), "NOTFOUND ");
    let new = c
        .query("forward", "carol@other.example")
        .strip_prefix("OK ")
        .expect("forwarded")
        .to_owned();
    let options = Config::load(Some(&l.config))
        .unwrap()
        .srs
        .options()
        .unwrap();
    let only_new = Srs::new(&[new_secret], options).unwrap();
    assert_eq!(only_new.reverse(&new).unwrap(), "carol@other.example");
    assert!(only_new.reverse(&old).is_err());
    // The old secret still verifies.
    assert_eq!(c.query("reverse", &old), "OK bob@example.org");
    assert_eq!(c.query("reverse", &new), "OK carol@other.example");
}

#[test]
fn srs_relay_reload_asks_the_running_relay_and_says_how_it_went() {
    let relay = Relay::start("");
    let addr = relay.addr();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args(["reload", "--config", relay.config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    add_alias(&relay, "cli@forward.example: cli@home.example");
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("reloaded"),
        "{o:?}"
    );
    assert!(rcpt_reply(&addr, "cli@forward.example").starts_with("250"));

    add_alias(&relay, "no colon here");
    let o = run();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("srs-relay: reload refused: relay.aliases_file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(rcpt_reply(&addr, "cli@forward.example").starts_with("250"));
    assert!(relay.log().contains("reload asked on the control socket"));
}
