//! The bounce path end to end: bounces to our SRS addresses go back to the original
//! sender; forged ones are refused at RCPT; what srs-relay cannot deliver comes back as a
//! DSN. The real binary, swaks, Mail::SRS and redis-server; one recording receiver per
//! domain (`relay.routes`), all on loopback ports picked at run time.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use srs_relay::srs::{Format, Options, Srs};

/// sender.test's and home.example's mail servers, and a relay routing to them.
struct World {
    relay: Relay,
    home: Receiver,
    sender: Receiver,
}

fn world(extra: &str) -> World {
    world_with("", extra)
}

fn world_with(srs_extra: &str, extra: &str) -> World {
    let home = Receiver::start();
    let sender = Receiver::start();
    let relay = Relay::start_full(
        "",
        &format!(
            "routes = {{ \"home.example\" = \"{}\", \"sender.test\" = \"{}\", \"other.example\" = \"{}\" }}\n",
            home.addr(),
            sender.addr(),
            sender.addr()
        ),
        &format!("[queue]\nretry_intervals = [\"1s\"]\n{extra}"),
    );
    if !srs_extra.is_empty() {
        let cfg = std::fs::read_to_string(&relay.config).unwrap();
        let cfg = cfg.replacen("[srs]\n", &format!("[srs]\n{srs_extra}\n"), 1);
        std::fs::write(&relay.config, cfg).unwrap();
        let mut relay = relay;
        relay.kill9();
        relay.spawn();
        return World {
            relay,
            home,
            sender,
        };
    }
    World {
        relay,
        home,
        sender,
    }
}

fn wait_count(r: &Receiver, n: usize, relay: &Relay, what: &str) {
    assert!(
        wait_until(Duration::from_secs(20), || r.count() >= n),
        "{what}: {} of {n} arrived; relay log:\n{}",
        r.count(),
        relay.log()
    );
}

/// bob@sender.test writes to the alias; returns the SRS return path home.example saw.
fn forward_to_john(w: &World, from: &str) -> String {
    let before = w.home.count();
    swaks_ok(&[
        "--server",
        &w.relay.addr(),
        "--from",
        from,
        "--to",
        "john@forward.example",
        "--header",
        "Subject: hello john",
    ]);
    wait_count(&w.home, before + 1, &w.relay, "forwarded mail");
    let m = w.home.messages().pop().unwrap();
    assert_eq!(m.rcpt_to, ["john@home.example"]);
    assert!(
        !m.data.windows(4).any(|x| x == b"SRS="),
        "the header From must not be touched"
    );
    m.mail_from
}

/// home.example's mail server bounces: an NDR from <> to the return path it was given.
fn send_ndr(w: &World, to: &str) -> String {
    swaks_ok(&[
        "--server",
        &w.relay.addr(),
        "--from",
        "<>",
        "--to",
        to,
        "--header",
        "Subject: Undelivered Mail Returned to Sender",
        "--body",
        "john@home.example: mailbox full",
    ])
}

/// The reply to `RCPT TO:<to>` after `MAIL FROM:<>`.
fn rcpt_reply(relay: &Relay, to: &str) -> String {
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO probe.test");
    assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
    let reply = c.cmd(&format!("RCPT TO:<{to}>"));
    c.cmd("QUIT");
    reply
}

fn codec(secret: &str, format: Format) -> Srs {
    Srs::new(
        &[secret],
        Options {
            format,
            ..Options::default()
        },
    )
    .unwrap()
}

#[test]
fn an_ndr_to_the_srs_address_reaches_the_original_sender() {
    let w = world("");
    let srs = forward_to_john(&w, "bob@sender.test");
    assert!(srs.starts_with("john+SRS="), "{srs}");
    assert!(srs.ends_with("=sender.test=bob@forward.example"), "{srs}");

    // Any case in transit.
    let out = send_ndr(&w, &srs.to_ascii_uppercase());
    assert!(out.contains("250 2.1.5"), "{out}");
    wait_count(&w.sender, 1, &w.relay, "bounce");
    let m = &w.sender.messages()[0];
    // The hash is checked case-insensitively; the address keeps the case it came back in.
    assert_eq!(m.rcpt_to, ["BOB@SENDER.TEST"]);
    assert_eq!(m.mail_from, "", "the bounce keeps its null sender");
    let text = String::from_utf8_lossy(&m.data);
    assert!(text.contains("mailbox full"), "{text}");

    // An out-of-office reply with a real sender goes back too, its sender kept.
    swaks_ok(&[
        "--server",
        &w.relay.addr(),
        "--from",
        "john@home.example",
        "--to",
        &srs,
        "--header",
        "Subject: Out of office",
    ]);
    wait_count(&w.sender, 2, &w.relay, "reply");
    let m = &w.sender.messages()[1];
    assert_eq!(m.rcpt_to, ["bob@sender.test"]);
    assert_eq!(m.mail_from, "john@home.example");
}

#[test]
fn forged_tampered_expired_and_foreign_srs_addresses_are_refused_at_rcpt() {
    let w = world("");
    let now = srs_relay::srs::unix_now();
    let ours = codec(SECRET, Format::Microsoft);
    let good = ours
        .forward_at("bob@sender.test", "john@forward.example", now)
        .unwrap();
    let classic = codec(SECRET, Format::Classic);
    let good_classic = classic
        .forward_at("bob@sender.test", "john@forward.example", now)
        .unwrap();
    // A control: the genuine ones are accepted.
    assert!(rcpt_reply(&w.relay, &good).starts_with("250 2.1.5"));
    assert!(rcpt_reply(&w.relay, &good_classic).starts_with("250 2.1.5"));

    let tamper_hash = |a: &str, at: usize| {
        let mut b = a.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let hash_at = good.find("+SRS=").unwrap() + 5;
    let classic_hash_at = 5;
    let cases: Vec<(&str, String, &str)> = vec![
        ("tampered hash", tamper_hash(&good, hash_at), "550 5.7.1"),
        (
            "tampered classic hash",
            tamper_hash(&good_classic, classic_hash_at),
            "550 5.7.1",
        ),
        (
            "tampered original",
            good.replace("=bob@", "=eve@"),
            "550 5.7.1",
        ),
        (
            "tampered domain",
            good_classic.replace("=sender.test=", "=evil.test="),
            "550 5.7.1",
        ),
        (
            "wrong secret",
            codec("another secret", Format::Microsoft)
                .forward_at("bob@sender.test", "john@forward.example", now)
                .unwrap(),
            "550 5.7.1",
        ),
        (
            "wrong alias",
            ours.forward_at("bob@sender.test", "mary@forward.example", now)
                .unwrap()
                .replacen("mary+", "john+", 1),
            "550 5.7.1",
        ),
        (
            "expired",
            ours.forward_at("bob@sender.test", "john@forward.example", now - 30 * 86_400)
                .unwrap(),
            "550 5.7.1",
        ),
        (
            "from the future",
            classic
                .forward_at("bob@sender.test", "john@forward.example", now + 5 * 86_400)
                .unwrap(),
            "550 5.7.1",
        ),
        (
            "malformed",
            "SRS0=abcd=zz@forward.example".to_owned(),
            "550 5.1.1",
        ),
        (
            "malformed microsoft",
            "john+SRS=ABCDEFGH=2W=nolocal@forward.example".to_owned(),
            "550 5.1.1",
        ),
        (
            "unknown stored token",
            ours.stored_address_at("ABCDEFGHIJKLMNOP", "forward.example", now),
            "550 5.1.1",
        ),
        (
            "forged stored form",
            "bounces+SRS=ABCDEFGHIJKLMNOPABCDEFGH=2W@forward.example".to_owned(),
            "550 5.7.1",
        ),
        (
            "SRS for someone else's domain",
            good.replace("@forward.example", "@elsewhere.example"),
            "550 5.7.1",
        ),
    ];
    for (what, address, want) in &cases {
        let reply = rcpt_reply(&w.relay, address);
        assert!(
            reply.starts_with(want),
            "{what}: {address}: got {reply:?}, want {want}"
        );
    }
    let expired = rcpt_reply(&w.relay, &cases[6].1);
    assert!(expired.contains("expired"), "{expired}");
    assert_eq!(
        w.relay.spooled("env"),
        0,
        "nothing spooled for refused RCPTs"
    );
    assert_eq!(w.sender.count(), 0);
}

#[test]
fn mail_srs_addresses_reverse_and_srs1_goes_back_one_hop() {
    let w = world_with("format = \"classic\"", "");
    let perl = |program: &str| -> String {
        let out = Command::new("perl")
            .args(["-MMail::SRS", "-e", program])
            .output()
            .expect("perl and Mail::SRS are installed by scripts/test.sh");
        assert!(
            out.status.success(),
            "perl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let srs0 = perl(&format!(
        "my $s = Mail::SRS->new(Secret => '{SECRET}'); print $s->forward('bob@sender.test', 'john@forward.example');"
    ));
    assert!(srs0.starts_with("SRS0="), "{srs0}");
    // Another forwarder (other.example) signed first; we made the SRS1 (as Mail::SRS does).
    let srs1 = perl(&format!(
        "my $o = Mail::SRS->new(Secret => 'other secret'); my $s = Mail::SRS->new(Secret => '{SECRET}');
         my $a = $o->forward('bob@sender.test', 'x@other.example'); print $a, \"\\n\", $s->forward($a, 'john@forward.example');"
    ));
    let (at_other, srs1) = srs1.split_once('\n').unwrap();
    assert!(srs1.starts_with("SRS1="), "{srs1}");

    send_ndr(&w, &srs0);
    wait_count(&w.sender, 1, &w.relay, "bounce to a Mail::SRS SRS0 address");
    assert_eq!(w.sender.messages()[0].rcpt_to, ["bob@sender.test"]);

    send_ndr(&w, srs1);
    wait_count(&w.sender, 2, &w.relay, "bounce to a Mail::SRS SRS1 address");
    // One hop back: to other.example's SRS0 address, which other.example reverses.
    assert_eq!(w.sender.messages()[1].rcpt_to, [at_other]);
}

const LONG_SENDER: &str = "a.very.long.local.part.that.will.not.fit.in.srs@sender.test";

/// A long sender takes the stored form; its bounce comes back, before and after a
/// restart of the relay.
fn stored_form_round_trip(w: &mut World) {
    let srs = forward_to_john(w, LONG_SENDER);
    assert!(srs.starts_with("bounces+SRS="), "{srs}");
    assert!(srs.ends_with("@forward.example"), "{srs}");
    let local = srs.split('@').next().unwrap();
    assert!(local.len() <= 64, "{srs}");
    assert!(
        !srs.contains("a.very.long"),
        "the store keeps the sender: {srs}"
    );

    send_ndr(w, &srs);
    wait_count(&w.sender, 1, &w.relay, "bounce to the stored form");
    assert_eq!(w.sender.messages()[0].rcpt_to, [LONG_SENDER]);

    assert!(w.relay.terminate().success());
    w.relay.spawn();
    send_ndr(w, &srs.to_ascii_lowercase());
    wait_count(
        &w.sender,
        2,
        &w.relay,
        "bounce to the stored form after a restart",
    );
    assert_eq!(w.sender.messages()[1].rcpt_to, [LONG_SENDER]);
}

#[test]
fn a_long_sender_takes_the_stored_form_with_the_embedded_store() {
    let mut w = world("");
    stored_form_round_trip(&mut w);
}

/// A private redis-server on a free loopback port, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/test.sh");
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "redis-server did not start"
        );
        Redis {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_long_sender_takes_the_stored_form_with_redis_shared_by_two_relays() {
    let redis = Redis::start();
    let store = format!("store = \"redis://127.0.0.1:{}/0\"", redis.port);
    let mut w = world_with(&store, "");
    stored_form_round_trip(&mut w);

    // A second relay on the same Redis (another MX of the same domain) takes the bounce.
    let second = world_with(&store, "");
    send_ndr(
        &second,
        &w.home.messages()[0].mail_from, // the stored form made by the first relay
    );
    wait_count(
        &second.sender,
        1,
        &second.relay,
        "bounce through the second relay",
    );
    assert_eq!(second.sender.messages()[0].rcpt_to, [LONG_SENDER]);
}

#[test]
fn relayed_mail_takes_the_stored_form_when_configured() {
    let w = world_with("stored_for_relayed = true", "");
    let cfg = std::fs::read_to_string(&w.relay.config).unwrap();
    let cfg = cfg.replacen(
        "[relay]\n",
        "[relay]\ntrusted_networks = [\"127.0.0.1/32\"]\n",
        1,
    );
    std::fs::write(&w.relay.config, cfg).unwrap();
    let mut w = w;
    w.relay.kill9();
    w.relay.spawn();
    swaks_ok(&[
        "--server",
        &w.relay.addr(),
        "--from",
        "carol@onprem.test",
        "--to",
        "someone@home.example",
    ]);
    wait_count(&w.home, 1, &w.relay, "relayed mail");
    let srs = w.home.messages()[0].mail_from.clone();
    assert!(srs.starts_with("bounces+SRS="), "{srs}");
    assert!(!srs.contains("onprem"), "{srs}");
    send_ndr(&w, &srs);
    // onprem.test has no route: the bounce is accepted for carol@onprem.test and queued.
    assert!(
        wait_until(Duration::from_secs(10), || w
            .relay
            .log()
            .contains("to=carol@onprem.test")),
        "{}",
        w.relay.log()
    );
}
