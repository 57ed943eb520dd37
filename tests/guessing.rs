//! Guessing SRS addresses (issue 11, part 3), end to end: refused recipients are counted
//! per client address and a client past `server.max_refused_rcpts` is cut off with 421,
//! at once and at its next connections, while other clients carry on; and
//! `srs.bounce_senders = "null"` lets only bounces reach our SRS addresses. The real
//! binary, swaks and recording receivers, on loopback: the guesser connects from
//! 127.0.0.1, the bystander from 127.0.0.2 (swaks `--local-interface`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use srs_relay::srs::{Format, Options, Srs};

const TOO_MANY: &str = "421 4.7.0 Too many refused recipients, try again later";

/// home.example's and sender.test's mail servers, and a relay routing to them.
struct World {
    relay: Relay,
    home: Receiver,
    sender: Receiver,
}

fn world(server_extra: &str, relay_extra: &str, srs_extra: &str) -> World {
    let home = Receiver::start();
    let sender = Receiver::start();
    let mut relay = Relay::prepare_full(
        server_extra,
        &format!(
            "routes = {{ \"home.example\" = \"{}\", \"sender.test\" = \"{}\" }}\n{relay_extra}",
            home.addr(),
            sender.addr()
        ),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    );
    let cfg = std::fs::read_to_string(&relay.config).unwrap();
    let cfg = cfg.replacen("[srs]\n", &format!("[srs]\n{srs_extra}\n"), 1);
    std::fs::write(&relay.config, cfg).unwrap();
    relay.spawn();
    World {
        relay,
        home,
        sender,
    }
}

fn codec(secret: &str, format: Format) -> Srs {
    let options = Options {
        format,
        ..Options::default()
    };
    Srs::new(&[secret], options).unwrap()
}

/// Well-formed, fresh SRS addresses at our domain, signed with a secret that is not ours.
fn forged(format: Format, n: usize) -> String {
    codec("a guess", format)
        .forward(&format!("victim{n}@example.org"), "john@forward.example")
        .unwrap()
}

/// The relay's first line to a new connection from 127.0.0.1, and whether it then hung up.
fn first_line(relay: &Relay) -> (String, bool) {
    let s = TcpStream::connect(relay.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut rest = String::new();
    let closed = r.read_line(&mut rest).unwrap_or(1) == 0;
    (line.trim_end().to_owned(), closed)
}

fn wait_count(r: &Receiver, n: usize, relay: &Relay, what: &str) {
    assert!(
        wait_until(Duration::from_secs(20), || r.count() >= n),
        "{what}: {} of {n} arrived; relay log:\n{}",
        r.count(),
        relay.log()
    );
}

#[test]
fn a_guesser_is_cut_off_and_a_client_at_another_address_is_not() {
    let w = world(
        "max_refused_rcpts = 5\nrefused_rcpts_window = \"60s\"\n",
        "",
        "",
    );
    // Two more sessions of the guesser, open before the limit is reached.
    let open_session = || {
        let mut c = Client::connect(&w.relay.addr());
        c.cmd("EHLO guesser.test");
        assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
        c
    };
    let (mut other1, mut other2) = (open_session(), open_session());
    let mut c = open_session();
    // Every kind of refused address counts: forged classic, forged Microsoft form, forged
    // stored form, unknown user, relaying denied. The fifth reaches the limit.
    let guesses = [
        (forged(Format::Classic, 1), "550 5.7.1"),
        (forged(Format::Microsoft, 2), "550 5.7.1"),
        (
            "bounces+SRS=ABCDEFGHIJKLMNOPABCDEFGH=2W@forward.example".to_owned(),
            "550 5.",
        ),
        ("nobody@forward.example".to_owned(), "550 5.1.1"),
        ("someone@elsewhere.example".to_owned(), "550 5.7.1"),
    ];
    assert!(guesses[0].0.starts_with("SRS0="), "{}", guesses[0].0);
    assert!(guesses[1].0.starts_with("john+SRS="), "{}", guesses[1].0);
    for (i, (address, want)) in guesses.iter().enumerate() {
        let reply = c.cmd(&format!("RCPT TO:<{address}>"));
        assert!(reply.starts_with(want), "guess {i} {address}: {reply}");
    }
    // The fifth refusal is answered, then the 421, then the session ends.
    assert_eq!(c.reply().trim_end(), TOO_MANY);
    assert_eq!(c.rest(), "", "the session must be closed");

    // The sessions still open get no further answer, even for a good SRS address.
    let good = srs_address();
    assert_eq!(
        other1.cmd(&format!("RCPT TO:<{good}>")).trim_end(),
        TOO_MANY
    );
    assert_eq!(other1.rest(), "");
    assert_eq!(
        other2.cmd("RCPT TO:<someone@elsewhere.example>").trim_end(),
        TOO_MANY
    );
    assert_eq!(other2.rest(), "");

    // A new connection from the same address: the 421 instead of the greeting.
    let (line, closed) = first_line(&w.relay);
    assert_eq!(line, TOO_MANY);
    assert!(closed, "the connection must be closed after the 421");
    let log = w.relay.log();
    assert!(
        log.contains("too many refused recipients: address blocked")
            && log.contains("peer=127.0.0.1")
            && log.contains("refused=5"),
        "{log}"
    );
    assert!(
        log.contains("connection refused: too many refused recipients"),
        "{log}"
    );

    // A client at 127.0.0.2 is not affected: its mail to the alias is relayed.
    let out = swaks_ok(&[
        "--server",
        &w.relay.addr(),
        "--local-interface",
        "127.0.0.2",
        "--from",
        "alice@sender.test",
        "--to",
        "john@forward.example",
        "--header",
        "Subject: not a guesser",
    ]);
    assert!(out.contains("250 2.0.0 OK queued"), "{out}");
    wait_count(&w.home, 1, &w.relay, "mail from 127.0.0.2");
    assert_eq!(w.home.messages()[0].rcpt_to, ["john@home.example"]);
    assert!(
        w.relay.log().contains("peer=127.0.0.2"),
        "the bystander must really come from 127.0.0.2"
    );
    // And 127.0.0.1 is still refused.
    assert_eq!(first_line(&w.relay).0, TOO_MANY);
    assert_eq!(w.sender.count(), 0, "no guess may have been delivered");
    assert_eq!(w.home.count(), 1);
}

#[test]
fn the_block_lasts_one_window_then_counting_starts_again() {
    let w = world(
        "max_refused_rcpts = 2\nrefused_rcpts_window = \"2s\"\n",
        "",
        "",
    );
    let guess =
        |c: &mut Client, n: usize| c.cmd(&format!("RCPT TO:<{}>", forged(Format::Microsoft, n)));
    let mut c = Client::connect(&w.relay.addr());
    c.cmd("EHLO guesser.test");
    c.cmd("MAIL FROM:<>");
    assert!(guess(&mut c, 1).starts_with("550 5.7.1"));
    assert!(guess(&mut c, 2).starts_with("550 5.7.1"));
    assert_eq!(c.reply().trim_end(), TOO_MANY);
    assert_eq!(first_line(&w.relay).0, TOO_MANY);
    // After the window the address may connect again, and has a fresh count.
    assert!(
        wait_until(Duration::from_secs(10), || first_line(&w.relay)
            .0
            .starts_with("220")),
        "still blocked after the window; log:\n{}",
        w.relay.log()
    );
    let mut c = Client::connect(&w.relay.addr());
    c.cmd("EHLO guesser.test");
    c.cmd("MAIL FROM:<>");
    assert!(guess(&mut c, 3).starts_with("550 5.7.1"));
    assert!(
        c.cmd("NOOP").starts_with("250"),
        "one refusal must not block"
    );
}

#[test]
fn trusted_networks_are_not_counted() {
    // 127.0.0.1 is trusted, 127.0.0.2 is not.
    let w = world(
        "max_refused_rcpts = 2\n",
        "trusted_networks = [\"127.0.0.1/32\"]\n",
        "",
    );
    let mut c = Client::connect(&w.relay.addr());
    c.cmd("EHLO onprem.test");
    c.cmd("MAIL FROM:<>");
    for n in 0..6 {
        let reply = c.cmd(&format!("RCPT TO:<{}>", forged(Format::Classic, n)));
        assert!(reply.starts_with("550 5.7.1"), "{reply}");
    }
    assert!(c.cmd("NOOP").starts_with("250"));
    assert!(first_line(&w.relay).0.starts_with("220"));
    // The control: the same guesses from an untrusted address are cut off at 2.
    let forged: Vec<String> = (0..3).map(|n| forged(Format::Classic, n)).collect();
    let o = swaks(&[
        "--server",
        &w.relay.addr(),
        "--local-interface",
        "127.0.0.2",
        "--from",
        "<>",
        "--to",
        &forged.join(","),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(TOO_MANY), "{out}");
}

/// An SRS address of ours for bob@sender.test, as the relay made it when forwarding.
fn srs_address() -> String {
    codec(SECRET, Format::Microsoft)
        .forward("bob@sender.test", "john@forward.example")
        .unwrap()
}

#[test]
fn by_default_a_reply_from_a_real_sender_reaches_the_original_sender() {
    let w = world("", "", "");
    let to = srs_address();
    let out = swaks_ok(&[
        "--server",
        &w.relay.addr(),
        "--from",
        "john@home.example",
        "--to",
        &to,
        "--header",
        "Subject: Automatic reply: out of office",
    ]);
    assert!(out.contains("250 2.0.0 OK queued"), "{out}");
    wait_count(&w.sender, 1, &w.relay, "out-of-office reply");
    let m = &w.sender.messages()[0];
    assert_eq!(m.rcpt_to, ["bob@sender.test"]);
    assert_eq!(m.mail_from, "john@home.example");
}

#[test]
fn with_null_only_bounces_reach_srs_addresses() {
    // A small refusal limit: the "bounces only" refusals must not count towards it.
    let w = world("max_refused_rcpts = 2\n", "", "bounce_senders = \"null\"");
    let to = srs_address();
    let mut c = Client::connect(&w.relay.addr());
    c.cmd("EHLO home.example");
    assert!(c.cmd("MAIL FROM:<john@home.example>").starts_with("250"));
    let reply = c.cmd(&format!("RCPT TO:<{to}>"));
    assert_eq!(
        reply.trim_end(),
        format!("550 5.7.1 <{to}>: SRS addresses accept only bounces (null sender)")
    );
    // A forged address gets the same answer: from a real sender nothing tells good from
    // forged.
    for n in 0..3 {
        let fake = forged(Format::Microsoft, n);
        let reply = c.cmd(&format!("RCPT TO:<{fake}>"));
        assert_eq!(
            reply.trim_end(),
            format!("550 5.7.1 <{fake}>: SRS addresses accept only bounces (null sender)")
        );
    }
    // Not an SRS address: the usual answer.
    let reply = c.cmd("RCPT TO:<nobody@forward.example>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    assert!(c.cmd("NOOP").starts_with("250"), "the session must go on");
    c.cmd("QUIT");

    // A bounce (MAIL FROM:<>) still goes through, to the original sender.
    let out = swaks_ok(&[
        "--server",
        &w.relay.addr(),
        "--from",
        "<>",
        "--to",
        &to,
        "--header",
        "Subject: Undelivered Mail Returned to Sender",
    ]);
    assert!(out.contains("250 2.0.0 OK queued"), "{out}");
    wait_count(&w.sender, 1, &w.relay, "bounce");
    let m = &w.sender.messages()[0];
    assert_eq!(m.rcpt_to, ["bob@sender.test"]);
    assert_eq!(m.mail_from, "");
    assert_eq!(w.sender.count(), 1, "the refused reply must not arrive");
}
