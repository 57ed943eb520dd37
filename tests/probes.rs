//! Open-relay and forgery probes (issue 6, point 6): from an untrusted client over a real
//! socket, hundreds of relay tricks and forged, tampered, expired SRS bounce addresses.
//! Not one RCPT may be accepted, every refusal is a permanent 5xx with an enhanced status
//! code, DATA is never reached and nothing is spooled. A legitimate alias is the control:
//! it must be accepted, so the test fails if everything is refused for a wrong reason.
//!
//! The exact refusal is not asserted, only its class: SRS addresses are checked at RCPT, a
//! forged, tampered or expired one gets 550 5.7.1 naming the check that failed, a malformed
//! one 550 5.1.1; relay tricks get 550 5.7.1 or 550 5.1.1. The refused-recipient throttle
//! is off here (`max_refused_rcpts = 0`): `tests/guessing.rs` tests it.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead;

use common::*;
use srs_relay::srs::unix_now;
use srs_relay::{Format, Options, Srs};

const DAY: u64 = 86_400;
/// Our alias (the control) and our domain, from the harness's configuration.
const ALIAS: &str = "john@forward.example";
const OTHER_ALIAS: &str = "team@forward.example";
const OUR_DOMAIN: &str = "forward.example";
/// Probes sent on one connection before the next; the server allows 1000 errors each.
const PER_CONNECTION: usize = 40;

/// A relay where 127.0.0.1 is not trusted (no `relay.trusted_networks`), with the
/// harness's aliases, enough error budget for a batch of probes, and no limit on refused
/// recipients per client (tests/guessing.rs tests that limit).
fn untrusted_relay() -> Relay {
    let relay = Relay::start_full("max_errors = 1000\nmax_refused_rcpts = 0\n", "", "");
    let config = std::fs::read_to_string(&relay.config).unwrap();
    assert!(!config.contains("trusted_networks"), "{config}");
    relay
}

/// One reply, all its lines; the text may echo 8-bit probe bytes, so read it lossily.
fn reply(c: &mut Client) -> String {
    let mut all = String::new();
    for _ in 0..100 {
        let mut line = Vec::new();
        if c.r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let last = line.len() < 4 || line.as_bytes()[3] != b'-';
        all.push_str(&line);
        if last {
            break;
        }
    }
    all
}

fn command(c: &mut Client, line: &[u8]) -> String {
    let mut bytes = line.to_vec();
    bytes.extend_from_slice(b"\r\n");
    c.send(&bytes);
    reply(c)
}

/// A permanent refusal with an RFC 3463 code: `5NN 5.N.N ...` on every line.
fn is_permanent_with_enhanced_code(reply: &str) -> bool {
    !reply.is_empty()
        && reply.lines().all(|l| {
            let b = l.as_bytes();
            let code = b.len() > 4
                && b[0] == b'5'
                && b[1..3].iter().all(u8::is_ascii_digit)
                && matches!(b[3], b' ' | b'-');
            let enhanced = l
                .get(4..)
                .and_then(|t| t.split(' ').next())
                .is_some_and(|e| {
                    let parts: Vec<&str> = e.split('.').collect();
                    parts.len() == 3
                        && parts[0] == "5"
                        && parts[1..].iter().all(|p| {
                            (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
                        })
                });
            code && enhanced
        })
}

/// A probe: the sender it comes with, and the RCPT TO argument as raw bytes (so 8-bit
/// tricks go out exactly as written).
struct Probe {
    sender: &'static str,
    rcpt: Vec<u8>,
}

/// What went wrong with the probes, for one readable failure at the end.
#[derive(Default)]
struct Findings {
    sent: usize,
    accepted: Vec<String>,
    not_permanent: Vec<String>,
    data_reached: Vec<String>,
}

/// Sends every probe as its own transaction: MAIL, RCPT (the probe), DATA (must be refused:
/// no valid recipient), RSET.
fn run_probes(relay: &Relay, probes: &[Probe], findings: &mut Findings) {
    for batch in probes.chunks(PER_CONNECTION) {
        let mut c = Client::connect(&relay.addr());
        assert!(command(&mut c, b"EHLO prober.example").starts_with("250"));
        for p in batch {
            let shown = String::from_utf8_lossy(&p.rcpt).into_owned();
            let mail = command(&mut c, format!("MAIL FROM:<{}>", p.sender).as_bytes());
            assert!(mail.starts_with("250"), "MAIL refused: {mail}");
            let mut rcpt = b"RCPT TO:".to_vec();
            rcpt.extend_from_slice(&p.rcpt);
            let answer = command(&mut c, &rcpt);
            findings.sent += 1;
            if answer.starts_with('2') {
                findings
                    .accepted
                    .push(format!("{shown:?} -> {}", answer.trim_end()));
            } else if !is_permanent_with_enhanced_code(&answer) {
                findings
                    .not_permanent
                    .push(format!("{shown:?} -> {}", answer.trim_end()));
            }
            if p.rcpt.iter().any(|&b| b == b'\r' || b == b'\n') {
                // A bare line end in a command ends the session (RFC 5321 §2.3.8).
                assert_eq!(c.rest(), "", "{shown:?}: session not closed");
                c = Client::connect(&relay.addr());
                assert!(command(&mut c, b"EHLO prober.example").starts_with("250"));
                continue;
            }
            let data = command(&mut c, b"DATA");
            if data.starts_with("354") {
                findings.data_reached.push(shown);
                // End the message so the session stays in step, then count on the spool check.
                c.send(b"Subject: probe\r\n\r\nprobe\r\n.\r\n");
                reply(&mut c);
            }
            assert!(command(&mut c, b"RSET").starts_with("250"));
        }
        assert!(command(&mut c, b"QUIT").starts_with("221"));
    }
}

/// The control: a real alias from the same untrusted client is accepted.
fn control_alias_is_accepted(relay: &Relay) {
    let mut c = Client::connect(&relay.addr());
    command(&mut c, b"EHLO prober.example");
    assert!(command(&mut c, b"MAIL FROM:<attacker@evil.example>").starts_with("250"));
    let answer = command(&mut c, format!("RCPT TO:<{ALIAS}>").as_bytes());
    assert!(
        answer.starts_with("250 2.1.5"),
        "control alias refused: {answer}"
    );
    // Not sent: the spool must stay empty.
    assert!(command(&mut c, b"RSET").starts_with("250"));
    assert!(command(&mut c, b"QUIT").starts_with("221"));
}

/// Relay attempts: foreign recipients reached directly or through our domain by every
/// routing and quoting trick. None of them names one of our aliases as the final mailbox.
fn relay_attempts() -> Vec<Probe> {
    // How our own name may be written; none of these is an alias with a user of its own.
    let ours = [
        "forward.example",
        "FORWARD.EXAMPLE",
        "Forward.Example.",
        "forward.example.",
        "relay.test",
        "localhost",
        "[127.0.0.1]",
        "[IPv6:::1]",
        "[IPv6:::ffff:127.0.0.1]",
    ];
    let mut rcpts: Vec<Vec<u8>> = Vec::new();
    let mut add = |s: String| rcpts.push(s.into_bytes());
    // Foreign to foreign, plainly and in a few spellings.
    for victim in [
        "victim@other.example",
        "VICTIM@OTHER.EXAMPLE",
        "postmaster@other.example",
        "abuse@other.example",
        "victim@other.example.",
        "victim@sub.forward.example.other.example",
        "victim@forward.example.other.example",
        "victim@other.example.forward.example",
        "victim@forwardexample",
        "victim@forward-example",
        "victim@127.0.0.1",
        "victim@[192.0.2.1]",
        "victim@[IPv6:2001:db8::1]",
    ] {
        add(format!("<{victim}>"));
    }
    for our in ours {
        // A user of ours that does not exist, in every spelling of our name.
        add(format!("<nobody@{our}>"));
        // The %-hack, bang paths, and an address inside the local part.
        add(format!("<victim%other.example@{our}>"));
        add(format!("<victim%other.example%{our}@{our}>"));
        add(format!("<other.example!victim@{our}>"));
        add(format!("<\"victim@other.example\"@{our}>"));
        add(format!("<\"victim%other.example\"@{our}>"));
        add(format!("<victim@other.example@{our}>"));
        add(format!("<victim\\@other.example@{our}>"));
        // Source routes through us to a stranger (RFC 5321 §4.1.2 syntax).
        add(format!("<@{our}:victim@other.example>"));
        add(format!("<@{our},@other.example:victim@other.example>"));
        // Our alias first, a stranger last: the last @ decides.
        add(format!("<{ALIAS}@other.example>"));
        add(format!("<\"{ALIAS}\"@other.example>"));
        add(format!("<john%{our}@other.example>"));
    }
    for (a, b) in [
        ("forward.example", "other.example"),
        ("relay.test", "evil.example"),
    ] {
        add(format!("<@{a},@{b}:victim@other.example>"));
        add(format!("<@{b}:victim@other.example>"));
        add(format!("@{a}:victim@other.example"));
    }
    // Trailing garbage, missing or doubled brackets, a second address.
    for t in [
        "<victim@other.example> x",
        "<victim@other.example>>",
        "<<victim@other.example>>",
        "<victim@other.example> <nobody@forward.example>",
        "<nobody@forward.example> <victim@other.example>",
        "victim@other.example",
        " <victim@other.example>",
        "<victim@other.example",
        "<victim@other.example> NOTIFY=NEVER",
        "<victim@other.example> ORCPT=rfc822;john@forward.example",
        "<victim(comment)@other.example>",
        "<victim@other.example(@forward.example)>",
        "<victim@other.example >",
        "<victim@other.example\t>",
        "<\"victim\\\"@other.example\"@forward.example>",
        "<'victim@other.example'@forward.example>",
        "<victim@other.example,nobody@forward.example>",
        "<victim@other.example;nobody@forward.example>",
        "<victim@other.example:nobody@forward.example>",
        "<victim@[127.0.0.1]>",
        "<victim@[IPv6:::1]>",
        "<victim%[127.0.0.1]@forward.example>",
    ] {
        add(t.to_owned());
    }
    // 8-bit and UTF-8 look-alikes of our domain and of the separators.
    for t in [
        "<victim@f\u{f6}rward.example>",
        "<victim@forward\u{3002}example>",
        "<victim@\u{ff46}\u{ff4f}\u{ff52}\u{ff57}\u{ff41}\u{ff52}\u{ff44}.example>",
        "<victim@forward.example\u{200b}>",
        "<victim@forward.example\u{a0}>",
        "<victim\u{ff20}other.example@forward.example>",
        "<v\u{ef}ctim@other.example>",
        "<victim@\u{f6}ther.example>",
        "<victim@xn--ther-5qa.example>",
        "<victim@forward.example.xn--ther-5qa.example>",
    ] {
        add(t.to_owned());
    }
    for raw in [
        &b"<victim@forward.example\xff>"[..],
        b"<victim@forward\xc0\xaeexample>",
        b"<victim%other.example@forward.example\x00>",
        b"<victim@other.example\x00@forward.example>",
        b"<victim@other.example\r@forward.example>",
        b"<victim\xe2\x80\x8e@other.example>",
    ] {
        rcpts.push(raw.to_vec());
    }
    // Each trick from a stranger, from one of our own addresses (forged) and as a bounce.
    let mut probes = Vec::new();
    for sender in ["attacker@evil.example", ALIAS, ""] {
        for r in &rcpts {
            probes.push(Probe {
                sender,
                rcpt: r.clone(),
            });
        }
    }
    probes
}

/// A small deterministic generator, so a failure names the same addresses on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, alphabet: &[u8]) -> char {
        alphabet[(self.next() % alphabet.len() as u64) as usize] as char
    }
    fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| self.pick(alphabet)).collect()
    }
}

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Replaces the character at `i` with one that differs even case-insensitively (both hash
/// comparisons ignore case).
fn tamper_at(s: &str, i: usize, rng: &mut XorShift, alphabet: &[u8]) -> String {
    let old = s.as_bytes()[i];
    let new = loop {
        let c = rng.pick(alphabet) as u8;
        if !c.eq_ignore_ascii_case(&old) {
            break c;
        }
    };
    let mut b = s.as_bytes().to_vec();
    b[i] = new;
    String::from_utf8(b).unwrap()
}

/// Byte range of the `n`th `=`-separated field of the local part (0: the tag/user part).
fn field(address: &str, n: usize) -> std::ops::Range<usize> {
    let local_end = address.rfind('@').unwrap();
    let mut start = 0;
    for _ in 0..n {
        start += address[start..local_end].find('=').unwrap() + 1;
    }
    let end = address[start..local_end]
        .find('=')
        .map_or(local_end, |i| start + i);
    start..end
}

/// Forged SRS bounce addresses for our domain, both forms: random, tampered, expired,
/// from the future, under a wrong secret or a wrong alias. Each is checked against the
/// real codec first, so that none of them is (by chance) valid.
fn forged_srs(now: u64) -> Vec<String> {
    let real = |format| {
        Srs::new(
            &[SECRET],
            Options {
                format,
                ..Options::default()
            },
        )
        .unwrap()
    };
    let (microsoft, classic) = (real(Format::Microsoft), real(Format::Classic));
    let wrong = |format| {
        Srs::new(
            &["not the relay's secret"],
            Options {
                format,
                ..Options::default()
            },
        )
        .unwrap()
    };
    let senders = [
        "bob@example.org",
        "alice.smith@mail.example.net",
        "\"john doe\"@example.org",
        "x@[192.0.2.9]",
    ];
    let ms = |srs: &Srs, sender: &str, alias: &str, at: u64| srs.forward_at(sender, alias, at);
    let cl = |srs: &Srs, sender: &str, at: u64| srs.forward_for_domain_at(sender, OUR_DOMAIN, at);
    let mut rng = XorShift(0x5EED_0F51_25A5_C0DE);
    let mut out: Vec<String> = Vec::new();
    let tt = |day_offset: i64| {
        // The two-character day stamp, as the codec writes it.
        let day = (now as i64 / DAY as i64 + day_offset) as u64;
        format!(
            "{}{}",
            BASE32[((day >> 5) & 31) as usize] as char,
            BASE32[(day & 31) as usize] as char
        )
    };

    // Random hashes with today's stamp, and made-up structures.
    for _ in 0..30 {
        let h = rng.string(BASE32, 8);
        out.push(format!(
            "john+SRS={h}={}=example.org=bob@{OUR_DOMAIN}",
            tt(0)
        ));
        let h = rng.string(BASE64, 4);
        out.push(format!("SRS0={h}={}=example.org=bob@{OUR_DOMAIN}", tt(0)));
    }
    for _ in 0..10 {
        let h = rng.string(BASE64, 4);
        let inner = rng.string(BASE64, 4);
        out.push(format!(
            "SRS1={h}=first.example=={inner}={}=example.org=bob@{OUR_DOMAIN}",
            tt(0)
        ));
        let h = rng.string(BASE32, 8);
        out.push(format!(
            "bounces+SRS={h}={}=corp.example=alice@{OUR_DOMAIN}",
            tt(0)
        ));
    }
    for s in [
        "john+SRS=@",
        "john+SRS==2W=example.org=bob@",
        "+SRS=AAAAAAAA=2W=example.org=bob@",
        "john+SRS=AAAAAAAA=2W==bob@",
        "john+SRS=AAAAAAAA=2W=example.org=@",
        "john+SRS=AAAAAAAA=!!=example.org=bob@",
        "john+SRS=AAAAAAAA@",
        "SRS0=@",
        "SRS0=abcd@",
        "SRS0=abcd=2W@",
        "SRS0==2W=example.org=bob@",
        "SRS0=abcd=2W==bob@",
        "SRS0=abcd=2W=example.org=@",
        "SRS1=abcd=@",
        "SRS1=abcd==x@",
        "SRS1=abcd=first.example=@",
        "SRS2=abcd=2W=example.org=bob@",
        "SRS0:abcd=2W=example.org=bob@",
    ] {
        out.push(format!("{s}{OUR_DOMAIN}"));
    }

    for sender in senders {
        let valid_ms = ms(&microsoft, sender, ALIAS, now).unwrap();
        let valid_cl = cl(&classic, sender, now).unwrap();
        let valid_srs1 = cl(&classic, &valid_cl, now).unwrap();
        // Each hash character changed.
        for v in [&valid_ms, &valid_cl] {
            let h = field(v.trim_start_matches('"'), 1);
            let offset = usize::from(v.starts_with('"'));
            let alphabet = if v.contains("+SRS=") { BASE32 } else { BASE64 };
            for i in h {
                out.push(tamper_at(v, i + offset, &mut rng, alphabet));
            }
        }
        let h = field(&valid_srs1, 1);
        for i in h {
            out.push(tamper_at(&valid_srs1, i, &mut rng, BASE64));
        }
        // Stamp, domain and local part changed under a valid hash.
        for v in [&valid_ms, &valid_cl] {
            let quoted = usize::from(v.starts_with('"'));
            let inner = &v[quoted..];
            let stamp = field(inner, 2);
            let domain = field(inner, 3);
            let local = field(inner, 4);
            for i in [stamp.start, stamp.start + 1] {
                out.push(tamper_at(v, i + quoted, &mut rng, BASE32));
            }
            out.push(tamper_at(v, domain.start + quoted, &mut rng, b"qxz"));
            out.push(tamper_at(v, domain.end - 1 + quoted, &mut rng, b"qxz"));
            out.push(tamper_at(v, local.start + quoted, &mut rng, b"qxz"));
            let mut swapped_domain = v.clone();
            swapped_domain
                .replace_range(domain.start + quoted..domain.end + quoted, "evil.example");
            out.push(swapped_domain);
        }
        // The hop of an SRS1 address changed.
        let hop = field(&valid_srs1, 2);
        out.push(tamper_at(&valid_srs1, hop.start, &mut rng, b"qxz"));
        // Made for john, sent to team (the Microsoft hash signs the alias user).
        let for_john = ms(&microsoft, sender, ALIAS, now).unwrap();
        out.push(for_john.replacen("john+SRS=", "team+SRS=", 1));
        out.push(for_john.replacen("john+SRS=", "bounces+SRS=", 1));
        out.push(for_john.replacen("john+SRS=", "nobody+SRS=", 1));
        let for_team = ms(&microsoft, sender, OTHER_ALIAS, now).unwrap();
        out.push(for_team.replacen("team+SRS=", "john+SRS=", 1));
        // Expired (made with the real codec, in the past) and from the future.
        for days in [22i64, 23, 30, 100, 500, 1000, 1023, -1, -2, -7, -100] {
            let at = (now as i64 - days * DAY as i64) as u64;
            out.push(ms(&microsoft, sender, ALIAS, at).unwrap());
            out.push(cl(&classic, sender, at).unwrap());
        }
        // Signed with a secret that is not the relay's.
        out.push(ms(&wrong(Format::Microsoft), sender, ALIAS, now).unwrap());
        out.push(cl(&wrong(Format::Classic), sender, now).unwrap());
        let wrong_cl = cl(&wrong(Format::Classic), sender, now).unwrap();
        out.push(cl(&wrong(Format::Classic), &wrong_cl, now).unwrap());
    }

    // Case changes of every forgery so far (receivers may lowercase; hashes ignore case).
    let mut cased = Vec::new();
    for a in &out {
        cased.push(a.to_ascii_lowercase());
        cased.push(a.to_ascii_uppercase());
    }
    out.extend(cased);

    let unique: BTreeSet<String> = out.into_iter().collect();
    for a in &unique {
        assert!(
            microsoft.reverse_at(a, now).is_err() && classic.reverse_at(a, now).is_err(),
            "probe {a} is a valid SRS address: not a forgery"
        );
    }
    unique.into_iter().collect()
}

#[test]
fn no_relay_and_no_forged_bounce_is_accepted() {
    let relay = untrusted_relay();
    control_alias_is_accepted(&relay);

    let relay_probes = relay_attempts();
    // Bounces come with the null sender; some forgers use a real-looking one.
    let forged: Vec<Probe> = forged_srs(unix_now())
        .into_iter()
        .enumerate()
        .map(|(i, a)| Probe {
            sender: if i % 3 == 0 {
                "attacker@evil.example"
            } else {
                ""
            },
            rcpt: format!("<{a}>").into_bytes(),
        })
        .collect();
    eprintln!(
        "probes: {} relay attempts, {} forged SRS addresses",
        relay_probes.len(),
        forged.len()
    );
    assert!(relay_probes.len() >= 200, "{}", relay_probes.len());
    assert!(forged.len() >= 200, "{}", forged.len());

    let mut findings = Findings::default();
    run_probes(&relay, &relay_probes, &mut findings);
    run_probes(&relay, &forged, &mut findings);
    // The relay still says yes to the control after all that.
    control_alias_is_accepted(&relay);

    assert_eq!(
        findings.sent,
        relay_probes.len() + forged.len(),
        "probes lost"
    );
    assert!(
        findings.accepted.is_empty(),
        "{} of {} probes accepted:\n{}",
        findings.accepted.len(),
        findings.sent,
        findings.accepted.join("\n")
    );
    assert!(
        findings.not_permanent.is_empty(),
        "refused without a 5xx and enhanced code:\n{}",
        findings.not_permanent.join("\n")
    );
    assert!(
        findings.data_reached.is_empty(),
        "DATA reached after:\n{}",
        findings.data_reached.join("\n")
    );
    assert_eq!(relay.spooled(), 0, "spooled; log:\n{}", relay.log());
}
