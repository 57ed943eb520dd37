use super::*;

use super::compose::boundary_from;
use super::returned::{header_section, original_message_id};
use super::status::{MAX_DIAGNOSTIC, diagnose, enhanced_code, status_code};
use crate::spool::{Envelope, Recipient, RecipientState};
use crate::time::rfc5322_date;

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use proptest::prelude::*;

use crate::spool::ClientInfo;

const NOW: u64 = 1_795_594_638; // Wed, 25 Nov 2026 08:17:18 +0000
const ARRIVAL: u64 = NOW - 5 * 86_400;
const MTA: &str = "relay.example";
const SRS_SENDER: &str = "SRS0=abcd=XY=example.org=alice@forward.example";

const ORIGINAL: &[u8] = b"Received: from mail.example.org ([192.0.2.7])\r\n\
\tby relay.example (srs-relay) with ESMTPS id 0123abcd;\r\n\
\tWed, 20 Nov 2026 08:17:18 +0000\r\n\
From: Alice <alice@example.org>\r\n\
To: alias@forward.example\r\n\
Subject: Hello\r\n\
Message-ID: <orig.1@example.org>\r\n\
Date: Wed, 20 Nov 2026 08:17:00 +0000\r\n\
\r\n\
Body line one.\r\n\
Secret body text.\r\n";

fn rcpt(address: &str, state: RecipientState, last_error: Option<&str>) -> Recipient {
    Recipient {
        address: address.into(),
        original: "alias@forward.example".into(),
        state,
        last_error: last_error.map(Into::into),
        remote: None,
        notify: None,
        orcpt: None,
    }
}

fn failed(address: &str, last_error: &str, remote: Option<&str>) -> Recipient {
    Recipient {
        remote: remote.map(Into::into),
        ..rcpt(address, RecipientState::Failed, Some(last_error))
    }
}

fn envelope(recipients: Vec<Recipient>) -> Envelope {
    Envelope {
        id: "0123abcd".into(),
        arrival: ARRIVAL,
        original_sender: "alice@example.org".into(),
        sender: SRS_SENDER.into(),
        recipients,
        client: ClientInfo {
            ip: "192.0.2.7".into(),
            helo: "mail.example.org".into(),
            tls: None,
        },
        attempts: 3,
        next_attempt: NOW + 3600,
        size: ORIGINAL.len() as u64,
        env_id: None,
        ret_full: false,
        delay_warned: false,
        dsn_owed: Vec::new(),
        held_since: None,
        held_secs: 0,
        sender_authenticated: None,
    }
}

fn request<'a>(env: &'a Envelope, rcpts: &'a [usize], action: Action) -> DsnRequest<'a> {
    DsnRequest {
        reporting_mta: MTA,
        from_domain: None,
        envelope: env,
        recipients: rcpts,
        action,
        original: ORIGINAL,
        now: NOW,
        retry_until: None,
    }
}

/// A composed DSN, checked for its wire form and parsed.
struct Dsn {
    raw: Vec<u8>,
}

impl Dsn {
    fn compose(req: &DsnRequest) -> Dsn {
        let raw = compose(req).expect("a DSN");
        check_wire(&raw);
        let raw_text = String::from_utf8_lossy(&raw);
        assert!(
            !raw_text.contains(&req.envelope.sender) || req.envelope.sender.is_empty(),
            "the SRS sender leaked into the DSN"
        );
        Dsn { raw }
    }

    fn message(&self) -> Message<'_> {
        MessageParser::default().parse(&self.raw).expect("parses")
    }

    /// The three parts of the report, after checking the top level.
    fn parts(&self) -> Vec<MessagePart<'_>> {
        let msg = self.message();
        let ct = msg.content_type().expect("Content-Type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let boundary = ct.attribute("boundary").expect("boundary").to_owned();
        assert!((1..=70).contains(&boundary.len()));
        let closing = format!("\r\n--{boundary}--\r\n");
        assert!(self.raw.ends_with(closing.as_bytes()));
        let PartType::Multipart(ids) = &msg.parts[0].body else {
            panic!("not multipart");
        };
        assert_eq!(ids.len(), 3, "three parts");
        ids.iter()
            .map(|&i| msg.parts[i as usize].clone().into_owned())
            .collect()
    }

    /// The human-readable part as it is.
    fn raw_text(&self) -> String {
        let parts = self.parts();
        let ct = parts[0].content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        parts[0].text_contents().unwrap().to_owned()
    }

    /// The human-readable part with its line breaks and indents as single spaces.
    fn text(&self) -> String {
        self.raw_text()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `message/delivery-status` part as field blocks: per-message, then one per
    /// recipient.
    fn status(&self) -> Vec<Vec<(String, String)>> {
        let parts = self.parts();
        let ct = parts[1].content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("message", Some("delivery-status"))
        );
        let body = parts[1].contents();
        assert!(body.is_ascii(), "delivery-status is US-ASCII");
        field_blocks(std::str::from_utf8(body).unwrap())
    }

    /// Content type and encoding of the returned part, and its contents.
    fn returned(&self) -> (String, Option<String>, Vec<u8>) {
        let parts = self.parts();
        let ct = parts[2].content_type().unwrap();
        let t = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
        let cte = parts[2].content_transfer_encoding().map(str::to_owned);
        (t, cte, parts[2].contents().to_vec())
    }
}

/// CRLF only, no line over 998 octets.
fn check_wire(raw: &[u8]) {
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(raw.ends_with(b"\r\n"));
    for line in raw.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len() - 1);
    }
}

/// Header-like blocks separated by empty lines, unfolded.
fn field_blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    for block in body.split("\r\n\r\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in block.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                fields
                    .last_mut()
                    .expect("continuation after a field")
                    .1
                    .push_str(line);
            } else {
                let (name, value) = line.split_once(':').expect("a field");
                fields.push((name.to_owned(), value.to_owned()));
            }
        }
        for f in &mut fields {
            f.1 = f.1.trim().to_owned();
        }
        if !fields.is_empty() {
            blocks.push(fields);
        }
    }
    blocks
}

/// The one value of `name` in `block`.
fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found = block.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
    let first = found.next().map(|(_, v)| v.as_str());
    assert!(found.next().is_none(), "{name} twice");
    first
}

fn names(block: &[(String, String)]) -> Vec<&str> {
    block.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn one_failed_recipient() {
    let env = envelope(vec![failed(
        "john@home.test",
        "550 5.1.1 <john@home.test>: user unknown (in reply to RCPT TO)",
        Some("mx.home.test[192.0.2.1]:25"),
    )]);
    let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));

    let msg = dsn.message();
    let from = msg.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@relay.example"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("alice@example.org")
    );
    assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
    assert_eq!(msg.date().unwrap().to_timestamp() as u64, NOW);
    let id = msg.message_id().unwrap();
    assert!(
        id.ends_with("@relay.example") && id.contains("0123abcd"),
        "{id}"
    );
    assert_eq!(msg.in_reply_to().as_text(), Some("orig.1@example.org"));
    assert_eq!(msg.references().as_text(), Some("orig.1@example.org"));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(msg.header_raw("MIME-Version").map(str::trim), Some("1.0"));
    assert!(msg.content_transfer_encoding().is_none(), "all 7-bit");

    let parts = dsn.parts();
    assert_eq!(
        parts[0].content_type().unwrap().attribute("charset"),
        Some("us-ascii")
    );
    let text = dsn.text();
    assert!(
        text.contains("<alias@forward.example> (forwarded to <john@home.test>)"),
        "{text}"
    );
    assert!(
        text.contains("host mx.home.test[192.0.2.1]:25 said: 550 5.1.1"),
        "{text}"
    );
    assert!(
        text.contains("user unknown (in reply to RCPT TO)"),
        "{text}"
    );
    assert!(text.contains("Its headers are attached"), "{text}");

    let status = dsn.status();
    assert_eq!(status.len(), 2);
    assert_eq!(names(&status[0]), ["Reporting-MTA", "Arrival-Date"]);
    assert_eq!(
        field(&status[0], "Reporting-MTA"),
        Some("dns; relay.example")
    );
    assert_eq!(
        field(&status[0], "Arrival-Date"),
        Some(rfc5322_date(ARRIVAL).as_str())
    );
    let r = &status[1];
    assert_eq!(
        names(r),
        [
            "Original-Recipient",
            "Final-Recipient",
            "Action",
            "Status",
            "Remote-MTA",
            "Diagnostic-Code",
            "Last-Attempt-Date",
            "Final-Log-ID"
        ]
    );
    assert_eq!(
        field(r, "Original-Recipient"),
        Some("rfc822; alias@forward.example")
    );
    assert_eq!(field(r, "Final-Recipient"), Some("rfc822; john@home.test"));
    assert_eq!(field(r, "Action"), Some("failed"));
    assert_eq!(field(r, "Status"), Some("5.1.1"));
    assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.home.test"));
    assert_eq!(
        field(r, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <john@home.test>: user unknown")
    );
    assert_eq!(
        field(r, "Last-Attempt-Date"),
        Some(rfc5322_date(NOW).as_str())
    );
    assert_eq!(field(r, "Final-Log-ID"), Some("0123abcd"));

    let (ctype, cte, returned) = dsn.returned();
    assert_eq!(ctype, "text/rfc822-headers");
    assert_eq!(cte, None);
    let returned = String::from_utf8(returned).unwrap();
    assert!(returned.contains("Subject: Hello\r\n"));
    assert!(returned.contains("\tby relay.example (srs-relay)"));
    assert!(!returned.contains("Secret body text"));
}

#[test]
fn two_recipients_in_one_dsn() {
    let mut env = envelope(vec![
        failed(
            "john@home.test",
            "550 5.1.1 <john@home.test>: user unknown (in reply to RCPT TO)",
            Some("mx.home.test[192.0.2.1]:25"),
        ),
        failed(
            "jane@nomail.test",
            "5.1.10 domain nomail.test accepts no mail (null MX, RFC 7505)",
            None,
        ),
        rcpt(
            "bob@ok.test",
            RecipientState::Delivered,
            Some("250 2.0.0 ok"),
        ),
    ]);
    env.recipients[1].original = "jane@nomail.test".into();
    let covered = recipients_to_report(&env, &[0, 1, 2], Action::Failed);
    assert_eq!(covered, [0, 1], "the delivered one is not reported");
    let dsn = Dsn::compose(&request(&env, &covered, Action::Failed));

    let status = dsn.status();
    assert_eq!(status.len(), 3, "per-message fields and two recipients");
    let (john, jane) = (&status[1], &status[2]);
    assert_eq!(
        field(john, "Final-Recipient"),
        Some("rfc822; john@home.test")
    );
    assert_eq!(field(john, "Status"), Some("5.1.1"));
    assert_eq!(
        field(jane, "Final-Recipient"),
        Some("rfc822; jane@nomail.test")
    );
    assert_eq!(
        field(jane, "Original-Recipient"),
        Some("rfc822; jane@nomail.test")
    );
    assert_eq!(field(jane, "Action"), Some("failed"));
    assert_eq!(field(jane, "Status"), Some("5.1.10"));
    assert_eq!(field(jane, "Remote-MTA"), None);
    assert_eq!(
        field(jane, "Diagnostic-Code"),
        Some("X-srs-relay; 5.1.10 domain nomail.test accepts no mail (null MX, RFC 7505)")
    );

    let text = dsn.text();
    assert!(
        text.contains("<jane@nomail.test>: 5.1.10 domain nomail.test"),
        "{text}"
    );
    let raw = dsn.raw_text();
    assert!(
        raw.contains("\r\n<jane@nomail.test>:\r\n    5.1.10 domain"),
        "{raw}"
    );
    assert!(text.contains("john@home.test"));
    assert!(!text.contains("bob@ok.test"));
}

#[test]
fn expired_with_a_transient_error() {
    let env = envelope(vec![
        failed(
            "john@home.test",
            "expired: 451 4.3.0 try later (in reply to RCPT TO)",
            Some("mx.home.test[192.0.2.1]:25"),
        ),
        failed(
            "jane@home.test",
            "expired: 451 try later (in reply to end of DATA)",
            None,
        ),
        failed(
            "joe@home.test",
            "expired: 4.4.1 connect to mx.home.test[192.0.2.1]:25: Connection refused (os error 111)",
            Some("mx.home.test[192.0.2.1]:25"),
        ),
        failed("jim@home.test", "expired: ", None),
    ]);
    let dsn = Dsn::compose(&request(&env, &[0, 1, 2, 3], Action::Failed));
    let status = dsn.status();
    let get = |i: usize, name: &str| field(&status[i + 1], name).map(str::to_owned);
    for i in 0..4 {
        assert_eq!(get(i, "Action").as_deref(), Some("failed"));
    }
    // The actual problem's code where there is one (RFC 3463 X.4.7), class 4 kept.
    assert_eq!(get(0, "Status").as_deref(), Some("4.3.0"));
    assert_eq!(
        get(0, "Diagnostic-Code").as_deref(),
        Some("smtp; 451 4.3.0 try later")
    );
    assert_eq!(get(1, "Status").as_deref(), Some("4.4.7"));
    assert_eq!(
        get(1, "Diagnostic-Code").as_deref(),
        Some("smtp; 451 try later")
    );
    assert_eq!(get(2, "Status").as_deref(), Some("4.4.1"));
    assert!(
        get(2, "Diagnostic-Code")
            .unwrap()
            .starts_with("X-srs-relay; 4.4.1 connect to")
    );
    assert_eq!(get(3, "Status").as_deref(), Some("4.4.7"));
    assert_eq!(get(3, "Diagnostic-Code"), None);

    let text = dsn.text();
    assert!(text.contains("not delivered in time"), "{text}");
    assert!(text.contains(&rfc5322_date(ARRIVAL)), "{text}");
    assert!(text.contains("said: 451 4.3.0 try later"), "{text}");
}

#[test]
fn delayed() {
    let mut env = envelope(vec![
        Recipient {
            remote: Some("mx.home.test[192.0.2.1]:25".into()),
            notify: Some("FAILURE,DELAY".into()),
            orcpt: None,
            ..rcpt(
                "john@home.test",
                RecipientState::Pending,
                Some("451 4.7.1 greylisted, try again later (in reply to RCPT TO)"),
            )
        },
        rcpt(
            "gone@home.test",
            RecipientState::Failed,
            Some("550 5.1.1 no"),
        ),
    ]);
    env.ret_full = true; // RET concerns failures: a delay returns the headers only
    let covered = recipients_to_report(&env, &[0, 1], Action::Delayed);
    assert_eq!(covered, [0]);
    let until = NOW + 4 * 86_400;
    let dsn = Dsn::compose(&DsnRequest {
        retry_until: Some(until),
        ..request(&env, &covered, Action::Delayed)
    });

    assert_eq!(
        dsn.message().subject(),
        Some("Delayed Mail (still being retried)")
    );
    let status = dsn.status();
    assert_eq!(status.len(), 2);
    let r = &status[1];
    assert_eq!(field(r, "Action"), Some("delayed"));
    assert_eq!(field(r, "Status"), Some("4.7.1"));
    assert_eq!(
        field(r, "Diagnostic-Code"),
        Some("smtp; 451 4.7.1 greylisted, try again later")
    );
    assert_eq!(
        field(r, "Will-Retry-Until"),
        Some(rfc5322_date(until).as_str())
    );
    assert_eq!(names(r).last(), Some(&"Will-Retry-Until"));

    let text = dsn.text();
    assert!(text.contains("This is a warning only"), "{text}");
    assert!(text.contains(&rfc5322_date(until)), "{text}");
    let (ctype, _, returned) = dsn.returned();
    assert_eq!(ctype, "text/rfc822-headers");
    assert!(
        !String::from_utf8(returned)
            .unwrap()
            .contains("Secret body text")
    );
}

#[test]
fn ret_full_returns_the_message() {
    let mut env = envelope(vec![failed(
        "john@home.test",
        "550 5.1.1 no such user",
        None,
    )]);
    env.ret_full = true;
    let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));
    let (ctype, cte, _) = dsn.returned();
    assert_eq!(ctype, "message/rfc822");
    assert_eq!(cte, None);
    let parts = dsn.parts();
    let PartType::Message(inner) = &parts[2].body else {
        panic!("not a nested message");
    };
    assert_eq!(inner.subject(), Some("Hello"));
    assert_eq!(inner.message_id(), Some("orig.1@example.org"));
    assert!(inner.body_text(0).unwrap().contains("Secret body text."));
    assert!(dsn.text().contains("The message is attached"));
    assert!(
        parts[2]
            .content_description()
            .unwrap()
            .contains("Undelivered Message")
    );
}

#[test]
fn ret_full_with_8bit_content() {
    let mut env = envelope(vec![failed(
        "john@home.test",
        "550 5.1.1 no such user",
        None,
    )]);
    env.ret_full = true;
    let original = "Subject: Grüße\r\nMessage-ID: <x@y>\r\n\r\nSchöne Grüße\r\n".as_bytes();
    let dsn = Dsn::compose(&DsnRequest {
        original,
        ..request(&env, &[0], Action::Failed)
    });
    let msg = dsn.message();
    assert_eq!(msg.content_transfer_encoding(), Some("8bit"));
    let (ctype, cte, _) = dsn.returned();
    assert_eq!(ctype, "message/rfc822");
    assert_eq!(cte.as_deref(), Some("8bit"));
    let parts = dsn.parts();
    let PartType::Message(inner) = &parts[2].body else {
        panic!("not a nested message");
    };
    assert_eq!(inner.subject(), Some("Grüße"));
    assert!(inner.body_text(0).unwrap().contains("Schöne Grüße"));
    // The report parts stay 7-bit.
    assert_eq!(parts[0].content_transfer_encoding(), None);

    // The same as headers only (RET=HDRS).
    env.ret_full = false;
    let dsn = Dsn::compose(&DsnRequest {
        original,
        ..request(&env, &[0], Action::Failed)
    });
    let (ctype, cte, returned) = dsn.returned();
    assert_eq!(
        (ctype.as_str(), cte.as_deref()),
        ("text/rfc822-headers", Some("8bit"))
    );
    assert_eq!(
        returned,
        "Subject: Grüße\r\nMessage-ID: <x@y>\r\n".as_bytes()
    );
}

#[test]
fn ret_full_falls_back_to_headers() {
    let mut env = envelope(vec![failed(
        "john@home.test",
        "550 5.1.1 no such user",
        None,
    )]);
    env.ret_full = true;
    let headers = b"Subject: big\r\n\r\n";
    let big = [
        &headers[..],
        &b"0123456789abcde\r\n".repeat(MAX_RETURNED_MESSAGE / 17 + 1),
    ]
    .concat();
    let long_line = [&headers[..], &[b'x'; 1200][..], b"\r\n"].concat();
    let with_nul = [&headers[..], b"a\0b\r\n"].concat();
    for original in [&big, &long_line, &with_nul] {
        let dsn = Dsn::compose(&DsnRequest {
            original,
            ..request(&env, &[0], Action::Failed)
        });
        let (ctype, _, returned) = dsn.returned();
        assert_eq!(ctype, "text/rfc822-headers");
        assert_eq!(returned, b"Subject: big\r\n");
        assert!(dsn.text().contains("Its headers are attached"));
    }
    // Up to the cap, it is returned.
    let mut at_cap = headers.to_vec();
    while at_cap.len() + 502 <= MAX_RETURNED_MESSAGE {
        at_cap.extend_from_slice(&[b'y'; 500]);
        at_cap.extend_from_slice(b"\r\n");
    }
    at_cap.extend_from_slice(&vec![b'z'; MAX_RETURNED_MESSAGE - at_cap.len() - 2]);
    at_cap.extend_from_slice(b"\r\n");
    assert_eq!(at_cap.len(), MAX_RETURNED_MESSAGE);
    let dsn = Dsn::compose(&DsnRequest {
        original: &at_cap,
        ..request(&env, &[0], Action::Failed)
    });
    assert_eq!(dsn.returned().0, "message/rfc822");
}

#[test]
fn envelope_id() {
    let mut env = envelope(vec![failed(
        "john@home.test",
        "550 5.1.1 no such user",
        None,
    )]);
    env.env_id = Some("QQ314159".into());
    let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));
    let status = dsn.status();
    assert_eq!(names(&status[0])[0], "Original-Envelope-Id");
    assert_eq!(field(&status[0], "Original-Envelope-Id"), Some("QQ314159"));

    // Stored xtext-decoded ("hi+20there"): given back decoded; controls cannot pass.
    env.env_id = Some("hi there".into());
    let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));
    assert_eq!(
        field(&dsn.status()[0], "Original-Envelope-Id"),
        Some("hi there")
    );
    env.env_id = Some("a\r\nBcc: x\u{e9}".into());
    let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));
    let status = dsn.status();
    assert_eq!(field(&status[0], "Original-Envelope-Id"), Some("a Bcc: x?"));
    assert_eq!(field(&status[0], "Bcc"), None);
}

#[test]
fn null_sender_gets_nothing() {
    let mut env = envelope(vec![failed(
        "john@home.test",
        "550 5.1.1 no such user",
        None,
    )]);
    env.original_sender = String::new();
    assert!(recipients_to_report(&env, &[0], Action::Failed).is_empty());
    env.recipients[0].state = RecipientState::Pending;
    assert!(recipients_to_report(&env, &[0], Action::Delayed).is_empty());
    // compose refuses too, whatever it is given.
    assert!(compose(&request(&env, &[0], Action::Failed)).is_none());
}

#[test]
fn notify_decides() {
    let cases: [(Option<&str>, bool, bool, bool); 9] = [
        // (NOTIFY, failure DSN, delay DSN, relayed DSN)
        (None, true, true, false),
        (Some(""), true, true, false),
        (Some("NEVER"), false, false, false),
        (Some("never"), false, false, false),
        (Some("DELAY"), false, true, false),
        (Some("SUCCESS,FAILURE"), true, false, true),
        (Some("FAILURE,DELAY"), true, true, false),
        (Some("success, failure"), true, false, true),
        (Some("SUCCESS"), false, false, true),
    ];
    for (notify, failure, delay, relayed) in cases {
        let mut env = envelope(vec![failed("john@home.test", "550 5.1.1 no", None)]);
        env.recipients[0].notify = notify.map(Into::into);
        let want: &[usize] = if failure { &[0] } else { &[] };
        assert_eq!(
            recipients_to_report(&env, &[0], Action::Failed),
            want,
            "{notify:?}"
        );
        env.recipients[0].state = RecipientState::Pending;
        let want: &[usize] = if delay { &[0] } else { &[] };
        assert_eq!(
            recipients_to_report(&env, &[0], Action::Delayed),
            want,
            "{notify:?}"
        );
        env.recipients[0].state = RecipientState::Delivered;
        let want: &[usize] = if relayed { &[0] } else { &[] };
        assert_eq!(
            recipients_to_report(&env, &[0], Action::Relayed),
            want,
            "{notify:?}"
        );
    }
}

#[test]
fn relayed() {
    let mut env = envelope(vec![
        Recipient {
            remote: Some("mx.home.test[192.0.2.1]:25".into()),
            notify: Some("SUCCESS,FAILURE".into()),
            ..rcpt(
                "john@home.test",
                RecipientState::Delivered,
                Some("250 2.0.0 Ok: queued as 4XyZ"),
            )
        },
        // Delivered, but no SUCCESS asked for.
        rcpt("mary@home.test", RecipientState::Delivered, Some("250 ok")),
    ]);
    env.ret_full = true; // RET concerns failures: the headers only
    let covered = recipients_to_report(&env, &[0, 1], Action::Relayed);
    assert_eq!(covered, [0]);
    let dsn = Dsn::compose(&request(&env, &covered, Action::Relayed));
    assert_eq!(
        dsn.message().subject(),
        Some("Successful Mail Delivery Report")
    );
    let status = dsn.status();
    assert_eq!(status.len(), 2);
    let r = &status[1];
    assert_eq!(field(r, "Final-Recipient"), Some("rfc822; john@home.test"));
    assert_eq!(field(r, "Action"), Some("relayed"));
    assert_eq!(field(r, "Status"), Some("2.0.0"));
    assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.home.test"));
    assert_eq!(
        field(r, "Diagnostic-Code"),
        Some("smtp; 250 2.0.0 Ok: queued as 4XyZ")
    );
    let text = dsn.text();
    assert!(text.contains("last notice"), "{text}");
    assert!(!text.contains("mary@"), "{text}");
    let (ctype, _, returned) = dsn.returned();
    assert_eq!(ctype, "text/rfc822-headers");
    assert!(
        !String::from_utf8(returned)
            .unwrap()
            .contains("Secret body text")
    );
}

#[test]
fn report_selection_skips_bad_indices_and_duplicates() {
    let env = envelope(vec![
        failed("a@x.test", "550 5.1.1 no", None),
        failed("b@x.test", "550 5.1.1 no", None),
    ]);
    assert_eq!(
        recipients_to_report(&env, &[1, 7, 1, 0], Action::Failed),
        [1, 0]
    );
    assert!(
        recipients_to_report(&env, &[0], Action::Delayed).is_empty(),
        "not pending"
    );
    assert!(compose(&request(&env, &[7], Action::Failed)).is_none());
    let dsn = Dsn::compose(&request(&env, &[1, 1], Action::Failed));
    assert_eq!(dsn.status().len(), 2, "one block for a repeated index");
}

#[test]
fn status_codes() {
    use Action::{Delayed, Failed};
    let cases: &[(&str, Action, &str)] = &[
        (
            "550 5.1.1 <j@x>: user unknown (in reply to RCPT TO)",
            Failed,
            "5.1.1",
        ),
        (
            "554 5.7.1 rejected (in reply to end of DATA)",
            Failed,
            "5.7.1",
        ),
        ("550 user unknown", Failed, "5.0.0"),
        ("550-5.1.1 multi line", Failed, "5.1.1"),
        // The reply code's class wins over a contradicting enhanced code.
        ("550 4.2.2 mailbox full", Failed, "5.2.2"),
        (
            "5.1.10 domain x accepts no mail (null MX, RFC 7505)",
            Failed,
            "5.1.10",
        ),
        ("5.1.2 domain x not found (NXDOMAIN)", Failed, "5.1.2"),
        ("", Failed, "5.0.0"),
        ("something odd", Failed, "5.0.0"),
        ("connection refused", Failed, "5.4.1"),
        ("451 4.3.0 try later", Delayed, "4.3.0"),
        ("421 service not available (in greeting)", Delayed, "4.0.0"),
        (
            "4.4.1 connect to mx[192.0.2.1]:25: Connection refused",
            Delayed,
            "4.4.1",
        ),
        ("connection refused", Delayed, "4.4.1"),
        ("connection lost or unparseable reply", Delayed, "4.4.2"),
        ("timeout", Delayed, "4.4.2"),
        ("", Delayed, "4.0.0"),
        ("expired: 451 4.3.0 try later", Failed, "4.3.0"),
        ("expired: 451 try later", Failed, "4.4.7"),
        ("expired: 4.4.3 MX of x: timed out", Failed, "4.4.3"),
        ("expired: connection refused", Failed, "4.4.1"),
        ("expired: 4.4.7 not delivered in time", Failed, "4.4.7"),
        ("expired: ", Failed, "4.4.7"),
        ("expired: weird", Failed, "4.4.7"),
        ("12.3.4 not a code", Failed, "5.0.0"),
        ("600 not a reply", Failed, "5.0.0"),
        ("5501 not a reply", Failed, "5.0.0"),
    ];
    for &(text, action, want) in cases {
        let got = status_code(&diagnose(Some(text)), action).to_string();
        assert_eq!(got, want, "{text:?} {action:?}");
    }
    assert_eq!(status_code(&diagnose(None), Failed).to_string(), "5.0.0");
}

#[test]
fn diagnostic_note_is_not_part_of_the_reply() {
    let cases = [
        ("550 5.1.1 no (in reply to RCPT TO)", "550 5.1.1 no"),
        ("421 4.3.2 busy (in greeting)", "421 4.3.2 busy"),
        (
            "554 no (in reply to EHLO) from mx.test[192.0.2.1]:25",
            "554 no",
        ),
        ("550 text (with parens) here", "550 text (with parens) here"),
        (
            "550 (in reply to me) said the server",
            "550 (in reply to me) said the server",
        ),
    ];
    for (text, reply) in cases {
        assert_eq!(diagnose(Some(text)).reply.as_deref(), Some(reply), "{text}");
    }
    assert_eq!(diagnose(Some("4.4.1 connect to x")).reply, None);
}

#[test]
fn dirty_reply_text_is_cleaned() {
    let env = envelope(vec![failed(
        "john@home.test",
        "550 5.7.1 Message\r\n refused:\tspam\u{e9}\u{0}\n\rBcc: evil@x",
        Some("mx.home.test\r\n[192.0.2.1]:25"),
    )]);
    let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));
    let status = dsn.status();
    let r = &status[1];
    assert_eq!(
        field(r, "Diagnostic-Code"),
        Some("smtp; 550 5.7.1 Message refused: spam? Bcc: evil@x")
    );
    assert_eq!(field(r, "Bcc"), None);
    assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.home.test"));
    // The human part keeps the non-ASCII text and says so.
    let parts = dsn.parts();
    assert_eq!(
        parts[0].content_type().unwrap().attribute("charset"),
        Some("utf-8")
    );
    assert_eq!(parts[0].content_transfer_encoding(), Some("8bit"));
    assert!(dsn.text().contains("refused: spam\u{e9} Bcc: evil@x"));
}

#[test]
fn long_texts_are_folded() {
    let long_reply = format!("550 5.7.1 {}", "word ".repeat(400));
    let long_word = format!("550 5.7.1 {}", "x".repeat(3000));
    for text in [long_reply, long_word] {
        let env = envelope(vec![failed("john@home.test", &text, None)]);
        let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));
        let status = dsn.status();
        let code = field(&status[1], "Diagnostic-Code").unwrap();
        assert!(code.starts_with("smtp; 550 5.7.1 "));
        assert!(code.len() > 900, "not cut short: {}", code.len());
        assert!(code.chars().count() <= MAX_DIAGNOSTIC + 20, "capped");
        assert!(dsn.text().contains("550 5.7.1"));
    }
}

#[test]
fn long_original_header_lines_are_folded() {
    let env = envelope(vec![failed("john@home.test", "550 5.1.1 no", None)]);
    let spaced = format!("X-Spaced: {}\r\n", "ab ".repeat(800));
    let solid = format!("X-Solid: {}\r\n", "é".repeat(1500));
    let original = format!("Subject: x\r\n{spaced}{solid}\r\nbody\r\n");
    let dsn = Dsn::compose(&DsnRequest {
        original: original.as_bytes(),
        ..request(&env, &[0], Action::Failed)
    });
    let (_, cte, returned) = dsn.returned();
    assert_eq!(cte.as_deref(), Some("8bit"));
    let returned = String::from_utf8(returned).expect("no UTF-8 sequence split");
    let unfolded = returned.replace("\r\n", "");
    // Folding before white space loses nothing.
    assert!(unfolded.contains(spaced.trim_end()));
    assert!(unfolded.contains(&"é".repeat(100)));
    assert!(!returned.contains("body"));
}

#[test]
fn header_section_edges() {
    assert_eq!(header_section(b""), b"");
    assert_eq!(header_section(b"\r\nbody only\r\n"), b"");
    assert_eq!(header_section(b"A: 1\nB: 2\n\nbody\n"), b"A: 1\r\nB: 2\r\n");
    assert_eq!(header_section(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2\r\n");
    assert_eq!(header_section(b"A: 1\rx\0y\r\n\r\n"), b"A: 1 x y\r\n");
    let endless = b"X: y\r\n".repeat(MAX_RETURNED_HEADERS / 6 + 100);
    let cut = header_section(&endless);
    assert!(cut.len() <= MAX_RETURNED_HEADERS && cut.len() > MAX_RETURNED_HEADERS - 10);
    assert!(cut.ends_with(b"X: y\r\n"));
}

#[test]
fn original_message_id_forms() {
    assert_eq!(
        original_message_id(b"Message-ID: <a@b>\r\n"),
        Some("<a@b>".into())
    );
    assert_eq!(
        original_message_id(b"message-id:\r\n  <a@b>\r\nX: y\r\n"),
        Some("<a@b>".into())
    );
    assert_eq!(original_message_id(b"Subject: x\r\n"), None);
    assert_eq!(original_message_id(b"Message-ID: a@b\r\n"), None);
    assert_eq!(original_message_id(b"Message-ID: <a b@c>\r\n"), None);
    // No In-Reply-To without one.
    let env = envelope(vec![failed("john@home.test", "550 5.1.1 no", None)]);
    let dsn = Dsn::compose(&DsnRequest {
        original: b"Subject: x\r\n\r\nbody\r\n",
        ..request(&env, &[0], Action::Failed)
    });
    assert!(dsn.message().header_raw("In-Reply-To").is_none());
}

#[test]
fn utf8_addresses() {
    let mut env = envelope(vec![failed("jörg@bücher.test", "550 5.1.1 no", None)]);
    env.recipients[0].original = "jörg+x=y@alias.test".into();
    env.original_sender = "ana@exämple.test".into();
    let dsn = Dsn::compose(&request(&env, &[0], Action::Failed));
    let status = dsn.status();
    assert_eq!(
        field(&status[1], "Final-Recipient"),
        Some("utf-8; j\\x{F6}rg@b\\x{FC}cher.test")
    );
    assert_eq!(
        field(&status[1], "Original-Recipient"),
        Some("utf-8; j\\x{F6}rg\\x{2B}x\\x{3D}y@alias.test")
    );
    // RFC 6532: the header carries the address as it is.
    let raw = String::from_utf8(dsn.raw.clone()).unwrap();
    assert!(raw.contains("\r\nTo: <ana@exämple.test>\r\n"));
    assert!(dsn.text().contains("<jörg@bücher.test>"));
}

#[test]
fn message_ids_and_boundaries_differ() {
    let env = envelope(vec![failed("john@home.test", "550 5.1.1 no", None)]);
    let a = Dsn::compose(&request(&env, &[0], Action::Failed));
    let b = Dsn::compose(&request(&env, &[0], Action::Failed));
    assert_ne!(a.message().message_id(), b.message().message_id());
}

#[test]
fn boundary_avoids_the_content() {
    let env = envelope(vec![]);
    let taken = b"--=_dsn_0123abcd_64_5\r\n and =_dsn_0123abcd_64_6";
    assert_eq!(
        boundary_from(&env, 100, &[b"x", taken], 5),
        "=_dsn_0123abcd_64_7"
    );
    assert_eq!(boundary_from(&env, 100, &[b"x"], 5), "=_dsn_0123abcd_64_5");
}

#[test]
fn no_original_at_all() {
    let env = envelope(vec![failed("john@home.test", "550 5.1.1 no", None)]);
    let dsn = Dsn::compose(&DsnRequest {
        original: b"",
        ..request(&env, &[0], Action::Failed)
    });
    let (ctype, _, returned) = dsn.returned();
    assert_eq!(ctype, "text/rfc822-headers");
    assert!(returned.is_empty());
}

fn messy_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\r".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\t".to_owned()),
        Just("\0".to_owned()),
        Just(" ".to_owned()),
        Just("550 5.1.1 ".to_owned()),
        Just("expired: ".to_owned()),
        Just("(in reply to RCPT TO)".to_owned()),
        Just("--=_dsn_".to_owned()),
        "[a-z]{1,20}",
        "[a-z]{990,1100}",
        "\\PC{1,10}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the texts, the DSN is CRLF lines of at most 998 octets, parses, and
    /// has one US-ASCII report block for the recipient.
    #[test]
    fn prop_wire_form(
        last_error in messy_text(),
        remote in proptest::option::of(messy_text()),
        original in messy_text(),
        env_id in proptest::option::of(messy_text()),
        delayed in any::<bool>(),
    ) {
        let action = if delayed { Action::Delayed } else { Action::Failed };
        let state = if delayed { RecipientState::Pending } else { RecipientState::Failed };
        let mut env = envelope(vec![Recipient {
            original,
            remote,
            ..rcpt("john@home.test", state, Some(&last_error))
        }]);
        env.env_id = env_id;
        env.ret_full = true;
        let dsn = Dsn::compose(&DsnRequest {
            original: last_error.as_bytes(),
            retry_until: Some(NOW + 86_400),
            ..request(&env, &[0], action)
        });
        let status = dsn.status();
        prop_assert_eq!(status.len(), 2);
        let code = field(&status[1], "Status").unwrap();
        prop_assert!(enhanced_code(code).is_some(), "{}", code);
        let class_ok = match code.as_bytes()[0] {
            b'4' => true,
            b'5' => !delayed,
            _ => false,
        };
        prop_assert!(class_ok, "{} for {:?}", code, action);
        prop_assert_eq!(field(&status[1], "Action"), Some(action.field()));
    }
}
