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
    assert_eq!(w.relay.spooled(), 0, "nothing spooled for refused RCPTs");
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
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
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

/// Sends one message with DSN parameters over a raw session; returns the final reply.
fn send_with_dsn_params(relay: &Relay, mail: &str, rcpts: &[&str], body: &str) -> String {
    let mut c = Client::connect(&relay.addr());
    let ehlo = c.cmd("EHLO sender.test");
    assert!(ehlo.contains("DSN"), "DSN is offered: {ehlo}");
    let r = c.cmd(mail);
    assert!(r.starts_with("250"), "{r}");
    for rcpt in rcpts {
        let r = c.cmd(rcpt);
        assert!(r.starts_with("250"), "{rcpt}: {r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(body.as_bytes());
    let r = c.cmd(".");
    c.cmd("QUIT");
    r
}

/// A DSN as the original sender's server received it, parsed with a real MIME parser.
struct ParsedDsn {
    top: Vec<(String, String)>,
    /// The `message/delivery-status` blocks: per message, then per recipient.
    status: Vec<Vec<(String, String)>>,
    text: String,
    returned_type: String,
    returned: String,
}

fn parse_dsn(raw: &[u8]) -> ParsedDsn {
    use mail_parser::{MessageParser, MimeHeaders, PartType};
    let msg = MessageParser::default().parse(raw).expect("the DSN parses");
    let ct = msg.content_type().expect("Content-Type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let PartType::Multipart(ids) = &msg.parts[0].body else {
        panic!("not multipart");
    };
    assert_eq!(ids.len(), 3, "text, delivery-status, returned headers");
    let part = |i: usize| &msg.parts[ids[i] as usize];
    let ctype = |i: usize| {
        let c = part(i).content_type().unwrap();
        format!("{}/{}", c.ctype(), c.subtype().unwrap_or(""))
    };
    assert_eq!(ctype(0), "text/plain");
    assert_eq!(ctype(1), "message/delivery-status");
    let status_text = String::from_utf8(part(1).contents().to_vec()).unwrap();
    let mut status = Vec::new();
    for block in status_text.split("\r\n\r\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in block.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                fields.last_mut().unwrap().1.push_str(line);
            } else {
                let (n, v) = line.split_once(':').expect("a field");
                fields.push((n.to_owned(), v.trim().to_owned()));
            }
        }
        if !fields.is_empty() {
            status.push(fields);
        }
    }
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let top = String::from_utf8_lossy(&raw[..head_end])
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
        .collect();
    ParsedDsn {
        top,
        status,
        text: part(0).text_contents().unwrap_or_default().to_owned(),
        returned_type: ctype(2),
        returned: String::from_utf8_lossy(part(2).contents()).into_owned(),
    }
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> &'a str {
    block
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {block:?}"))
}

#[test]
fn notify_success_brings_a_relayed_notice_where_the_next_hop_has_no_dsn() {
    let w = world("");
    let reply = send_with_dsn_params(
        &w.relay,
        "MAIL FROM:<bob@sender.test> ENVID=env-7",
        &["RCPT TO:<john@forward.example> NOTIFY=SUCCESS,FAILURE"],
        "From: Bob <bob@sender.test>\r\nSubject: tell me\r\nMessage-ID: <m7@sender.test>\r\n\r\nbody\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    wait_count(&w.home, 1, &w.relay, "forwarded mail");
    wait_count(&w.sender, 1, &w.relay, "relayed notice");
    let m = &w.sender.messages()[0];
    assert_eq!(m.mail_from, "");
    assert_eq!(m.rcpt_to, ["bob@sender.test"]);
    let dsn = parse_dsn(&m.data);
    assert_eq!(
        field(&dsn.top, "Subject"),
        "Successful Mail Delivery Report"
    );
    assert_eq!(field(&dsn.status[0], "Original-Envelope-Id"), "env-7");
    let r = &dsn.status[1];
    assert_eq!(field(r, "Action"), "relayed");
    assert_eq!(field(r, "Status"), "2.0.0");
    // dsn.hide_forward_targets (default): the alias, not where it forwards to.
    assert_eq!(field(r, "Final-Recipient"), "rfc822; john@forward.example");
    assert_eq!(
        field(r, "Original-Recipient"),
        "rfc822; john@forward.example"
    );
    assert_eq!(field(r, "Remote-MTA"), "dns; 127.0.0.1");
    assert_eq!(dsn.returned_type, "text/rfc822-headers");
    assert!(
        dsn.returned.contains("Subject: tell me"),
        "{}",
        dsn.returned
    );

    // A next hop that speaks DSN gets the NOTIFY with the message: no notice from us.
    let w = world("");
    w.home.script.lock().unwrap().dsn = true;
    let reply = send_with_dsn_params(
        &w.relay,
        "MAIL FROM:<bob@sender.test>",
        &["RCPT TO:<john@forward.example> NOTIFY=SUCCESS"],
        "Subject: tell me again\r\n\r\nbody\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    wait_count(&w.home, 1, &w.relay, "forwarded mail");
    assert!(
        wait_until(Duration::from_secs(10), || w.relay.spooled() == 0),
        "{}",
        w.relay.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.sender.count(), 0, "{}", w.relay.log());
    assert!(!w.relay.log().contains("DSN queued"), "{}", w.relay.log());
}

#[test]
fn a_550_downstream_brings_our_dsn_to_the_original_sender() {
    let w = world("");
    w.home.script.lock().unwrap().rcpt.insert(
        "john@home.example".into(),
        "550 5.1.1 <john@home.example>: Recipient address rejected: User unknown".into(),
    );
    let reply = send_with_dsn_params(
        &w.relay,
        "MAIL FROM:<bob@sender.test> RET=HDRS ENVID=env-42",
        &["RCPT TO:<john@forward.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;john@forward.example"],
        "From: Bob <bob@sender.test>\r\nTo: john@forward.example\r\nSubject: dsn test\r\nMessage-ID: <m1@sender.test>\r\n\r\nbody\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    wait_count(&w.sender, 1, &w.relay, "DSN");
    let m = &w.sender.messages()[0];
    assert_eq!(m.mail_from, "", "DSNs come from <>");
    assert_eq!(
        m.rcpt_to,
        ["bob@sender.test"],
        "to the original sender, not the SRS address"
    );
    let dsn = parse_dsn(&m.data);
    assert_eq!(field(&dsn.top, "To"), "<bob@sender.test>");
    assert!(field(&dsn.top, "From").contains("MAILER-DAEMON@relay.test"));
    assert_eq!(field(&dsn.top, "Auto-Submitted"), "auto-replied");
    assert_eq!(field(&dsn.top, "In-Reply-To"), "<m1@sender.test>");
    let per_message = &dsn.status[0];
    assert_eq!(field(per_message, "Reporting-MTA"), "dns; relay.test");
    assert_eq!(field(per_message, "Original-Envelope-Id"), "env-42");
    assert!(field(per_message, "Arrival-Date").contains(" +0000"));
    assert_eq!(dsn.status.len(), 2, "one recipient block");
    let r = &dsn.status[1];
    assert_eq!(
        field(r, "Original-Recipient"),
        "rfc822; john@forward.example"
    );
    // dsn.hide_forward_targets (default): the alias, in the receiver's reply too.
    assert_eq!(field(r, "Final-Recipient"), "rfc822; john@forward.example");
    assert_eq!(field(r, "Action"), "failed");
    assert_eq!(field(r, "Status"), "5.1.1");
    assert_eq!(field(r, "Remote-MTA"), "dns; 127.0.0.1");
    assert_eq!(
        field(r, "Diagnostic-Code"),
        "smtp; 550 5.1.1 <john@forward.example>: Recipient address rejected: User unknown"
    );
    assert_eq!(dsn.returned_type, "text/rfc822-headers");
    assert!(
        dsn.returned.contains("Subject: dsn test"),
        "{}",
        dsn.returned
    );
    assert!(!dsn.returned.contains("body"), "RET=HDRS returns no body");
    assert!(dsn.text.contains("john@forward.example"), "{}", dsn.text);
    let raw = String::from_utf8_lossy(&m.data);
    assert!(
        !raw.contains("home.example"),
        "the forward target leaked: {raw}"
    );
    assert!(
        !raw.contains("+SRS="),
        "the SRS address is not the DSN's business"
    );
    assert!(
        wait_until(Duration::from_secs(10), || w.relay.spooled() == 0),
        "the failed message and its DSN leave the spool"
    );
}

#[test]
fn deferrals_bring_one_delay_warning_then_an_expiry_dsn() {
    let w = world("max_lifetime = \"5s\"\ndelay_warning = \"2s\"\n");
    w.home.script.lock().unwrap().rcpt.insert(
        "john@home.example".into(),
        "451 4.3.0 try again later".into(),
    );
    let reply = send_with_dsn_params(
        &w.relay,
        "MAIL FROM:<bob@sender.test> RET=FULL",
        &["RCPT TO:<john@forward.example>"],
        "Subject: slow\r\n\r\nthe whole message comes back\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        wait_until(Duration::from_secs(30), || w.sender.count() >= 2),
        "{} DSNs; log:\n{}",
        w.sender.count(),
        w.relay.log()
    );
    let msgs = w.sender.messages();
    let delayed = parse_dsn(&msgs[0].data);
    let r = &delayed.status[1];
    assert_eq!(field(r, "Action"), "delayed");
    assert_eq!(field(r, "Status"), "4.3.0");
    assert!(field(r, "Will-Retry-Until").contains(" +0000"));
    assert_eq!(
        delayed.returned_type, "text/rfc822-headers",
        "warnings return headers"
    );
    let failed = parse_dsn(&msgs[1].data);
    let r = &failed.status[1];
    assert_eq!(field(r, "Action"), "failed");
    assert_eq!(
        field(r, "Status"),
        "4.3.0",
        "an expiry keeps its transient status"
    );
    assert_eq!(failed.returned_type, "message/rfc822", "RET=FULL");
    assert!(failed.returned.contains("the whole message comes back"));
    for m in &msgs {
        assert_eq!(m.rcpt_to, ["bob@sender.test"]);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        w.sender.count(),
        2,
        "one warning, one failure: nothing more"
    );
}

#[test]
fn a_bounce_that_cannot_be_delivered_is_not_bounced_again() {
    let w = world("");
    let srs = forward_to_john(&w, "bob@sender.test");
    w.sender.script.lock().unwrap().rcpt.insert(
        "bob@sender.test".into(),
        "550 5.1.1 <bob@sender.test>: no such user".into(),
    );
    send_ndr(&w, &srs);
    assert!(
        wait_until(Duration::from_secs(20), || w.relay.log().contains("no DSN")),
        "{}",
        w.relay.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || w.relay.spooled() == 0),
        "the failed bounce leaves the spool"
    );
    assert_eq!(w.sender.count(), 0);
    assert_eq!(
        w.home.count(),
        1,
        "only the forwarded message ever reached home"
    );
    assert!(!w.relay.log().contains("DSN queued"), "{}", w.relay.log());
}

#[test]
fn notify_never_means_no_dsn() {
    let w = world("");
    w.home.script.lock().unwrap().rcpt.insert(
        "john@home.example".into(),
        "550 5.1.1 <john@home.example>: User unknown".into(),
    );
    send_with_dsn_params(
        &w.relay,
        "MAIL FROM:<bob@sender.test>",
        &["RCPT TO:<john@forward.example> NOTIFY=NEVER"],
        "Subject: quiet\r\n\r\nx\r\n",
    );
    assert!(
        wait_until(Duration::from_secs(20), || w.relay.log().contains("no DSN")),
        "{}",
        w.relay.log()
    );
    assert_eq!(w.sender.count(), 0);
}

#[test]
fn the_relay_starts_while_redis_is_down_and_uses_it_once_it_is_up() {
    let port = free_port();
    let store = format!("store = \"redis://127.0.0.1:{port}/0\"");
    let w = world_with(&store, "");
    assert!(
        w.relay.log().contains("sender store unreachable"),
        "{}",
        w.relay.log()
    );
    let send = || {
        let o = swaks(&[
            "--server",
            &w.relay.addr(),
            "--from",
            LONG_SENDER,
            "--to",
            "john@forward.example",
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = send();
    assert!(out.contains("451 4.3.0"), "{out}");
    assert_eq!(w.relay.spooled(), 0);

    let _redis = Redis::start_on(port);
    let start = std::time::Instant::now();
    let mut out = send();
    while out.contains("451 4.3.0") && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(300));
        out = send();
    }
    assert!(!out.contains("451"), "{out}\n{}", w.relay.log());
    wait_count(&w.home, 1, &w.relay, "forwarded mail");
    let m = w.home.messages().pop().unwrap();
    assert!(m.mail_from.starts_with("bounces+SRS="), "{}", m.mail_from);
}

#[test]
fn a_sender_store_that_is_down_gets_a_temporary_refusal() {
    let redis = Redis::start();
    let store = format!("store = \"redis://127.0.0.1:{}/0\"", redis.port);
    let w = world_with(&store, "");
    drop(redis); // killed: the next RCPT that needs the store cannot have it
    let o = swaks(&[
        "--server",
        &w.relay.addr(),
        "--from",
        LONG_SENDER,
        "--to",
        "john@forward.example",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("451 4.3.0"), "{out}");
    assert_eq!(w.relay.spooled(), 0);
    // Short senders need no store: mail keeps flowing.
    forward_to_john(&w, "bob@sender.test");
    // And an SRS address whose token cannot be looked up is deferred, not refused.
    let ours = codec(SECRET, Format::Microsoft);
    let stored = ours.stored_address_at(
        "ABCDEFGHIJKLMNOP",
        "forward.example",
        srs_relay::srs::unix_now(),
    );
    let reply = rcpt_reply(&w.relay, &stored);
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
}
