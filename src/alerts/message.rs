//! The queue alert's mail: a plain-text RFC 5322 message (CRLF lines, UTF-8, none over
//! the line limit), written with the DSN's header and wrapping helpers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::delivery::QueueSnapshot;
use crate::dsn::{cap, clean_address, clean_text, clean_token, id_token, push_field, wrap};
use crate::time::rfc5322_date;

/// Raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Raised,
    Cleared,
}

/// Everything one alert mail says.
#[derive(Debug, Clone, Copy)]
pub struct AlertMail<'a> {
    pub change: Change,
    /// Our host name (`From: MAILER-DAEMON@...`, the Message-ID's domain).
    pub hostname: &'a str,
    pub to: &'a str,
    pub threshold: usize,
    /// The alert clears at this many queued messages or fewer.
    pub clears_at: usize,
    pub snapshot: &'a QueueSnapshot,
    /// Unix seconds.
    pub now: u64,
}

/// Longest error text quoted per destination.
const MAX_ERROR: usize = 300;

/// The complete message, ready to spool.
pub fn compose(m: &AlertMail) -> Vec<u8> {
    let host = match clean_token(m.hostname) {
        h if h.is_empty() => "localhost".to_owned(),
        h => h,
    };
    let s = m.snapshot;
    let subject = match m.change {
        Change::Raised => format!(
            "srs-relay queue alert on {host}: {} messages queued (threshold {})",
            s.queued, m.threshold
        ),
        Change::Cleared => format!(
            "srs-relay queue back under threshold on {host}: {} messages queued",
            s.queued
        ),
    };
    let text = body(m, &host);

    let mut out = String::with_capacity(1024 + text.len());
    push_field(
        &mut out,
        "From",
        &format!("srs-relay <MAILER-DAEMON@{host}>"),
    );
    push_field(&mut out, "To", &format!("<{}>", clean_address(m.to)));
    push_field(&mut out, "Subject", &subject);
    push_field(&mut out, "Date", &rfc5322_date(m.now));
    push_field(&mut out, "Message-ID", &message_id(m, &host));
    // RFC 3834: sent by the relay itself; responders must not answer it.
    push_field(&mut out, "Auto-Submitted", "auto-generated");
    push_field(&mut out, "MIME-Version", "1.0");
    push_field(&mut out, "Content-Type", "text/plain; charset=utf-8");
    let encoding = if text.is_ascii() { "7bit" } else { "8bit" };
    push_field(&mut out, "Content-Transfer-Encoding", encoding);
    out.push_str("\r\n");
    out.push_str(&text);
    out.into_bytes()
}

/// The text: what happened, the oldest message, the busiest destinations.
fn body(m: &AlertMail, host: &str) -> String {
    let s = m.snapshot;
    let mut out = String::new();
    let para = |out: &mut String, text: &str| {
        wrap(out, "", &clean_text(text, false));
        out.push_str("\r\n");
    };
    match m.change {
        Change::Raised => para(
            &mut out,
            &format!(
                "The delivery queue of {host} holds {} messages, more than the alert threshold of {}. \
                 Another mail follows when it is back at {} or fewer.",
                s.queued, m.threshold, m.clears_at
            ),
        ),
        Change::Cleared => para(
            &mut out,
            &format!(
                "The delivery queue of {host} is back under the alert threshold: {} messages \
                 queued (the alert was raised above {} and clears at {} or fewer).",
                s.queued, m.threshold, m.clears_at
            ),
        ),
    }
    if let Some((id, arrival)) = &s.oldest {
        let age = Duration::from_secs(m.now.saturating_sub(*arrival));
        para(
            &mut out,
            &format!(
                "Oldest message: queue id {}, queued {} ago ({}). Messages queued over an hour: {}.",
                clean_token(id),
                humantime::format_duration(age),
                rfc5322_date(*arrival),
                s.over_hour
            ),
        );
    }
    if !s.destinations.is_empty() {
        let _ = write!(
            out,
            "Recipient domains with the most messages waiting ({} of {}):\r\n\r\n",
            s.destinations.len(),
            s.destinations_total
        );
        for d in &s.destinations {
            wrap(
                &mut out,
                "  ",
                &format!("{}: {} messages", clean_text(&d.domain, false), d.messages),
            );
            if let Some(e) = &d.last_error {
                wrap(
                    &mut out,
                    "      ",
                    &format!("last error: {}", cap(&clean_text(e, false), MAX_ERROR)),
                );
            }
        }
        out.push_str("\r\n");
    }
    para(
        &mut out,
        "Sent by srs-relay (alerts.queue_threshold, alerts.notify). The queue's gauges are on \
         /metrics: srs_relay_queue_messages, srs_relay_queue_oldest_age_seconds.",
    );
    out
}

fn message_id(m: &AlertMail, host: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let kind = match m.change {
        Change::Raised => "raised",
        Change::Cleared => "cleared",
    };
    let oldest = oldest_token(m.snapshot);
    format!(
        "<alert.{kind}.{}.{}.{seq}.{oldest}@{host}>",
        m.now,
        std::process::id()
    )
}

/// The oldest queue id as a Message-ID token (`0` when the queue is empty).
fn oldest_token(s: &QueueSnapshot) -> String {
    match s.oldest.as_ref().map(|(id, _)| id_token(id)) {
        Some(t) if !t.is_empty() => t,
        _ => "0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DestinationCount;
    use mail_parser::MimeHeaders;

    fn snapshot() -> QueueSnapshot {
        QueueSnapshot {
            queued: 5,
            in_flight: 0,
            oldest: Some(("Q1abc".into(), 1_795_594_638 - 7_500)),
            over_hour: 2,
            held: 0,
            destinations: vec![DestinationCount {
                domain: "home.example".into(),
                messages: 4,
                last_error: Some(format!(
                    "451 4.3.0 busy é\r\nBare\nline {}",
                    "long ".repeat(400)
                )),
            }],
            destinations_total: 2,
        }
    }

    #[test]
    fn a_well_formed_plain_text_mail() {
        let snap = snapshot();
        let mail = compose(&AlertMail {
            change: Change::Raised,
            hostname: "relay.test",
            to: "postmaster@ops.example",
            threshold: 3,
            clears_at: 2,
            snapshot: &snap,
            now: 1_795_594_638,
        });
        // CRLF only, no line over 998 octets.
        for (i, &b) in mail.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(mail[i - 1], b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(mail.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        assert!(mail.split(|&b| b == b'\n').all(|l| l.len() <= 999));
        let parsed = mail_parser::MessageParser::default()
            .parse(&mail[..])
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some("srs-relay queue alert on relay.test: 5 messages queued (threshold 3)")
        );
        assert_eq!(
            parsed.from().unwrap().first().unwrap().address(),
            Some("MAILER-DAEMON@relay.test")
        );
        assert_eq!(
            parsed.to().unwrap().first().unwrap().address(),
            Some("postmaster@ops.example")
        );
        assert!(parsed.date().is_some());
        assert!(parsed.message_id().unwrap().ends_with("@relay.test"));
        let ct = parsed.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        assert_eq!(ct.attribute("charset"), Some("utf-8"));
        let text = parsed.body_text(0).unwrap();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            "holds 5 messages, more than the alert threshold of 3",
            "back at 2 or fewer",
            "queue id Q1abc, queued 2h 5m ago",
            "over an hour: 2",
            "(1 of 2)",
            "home.example: 4 messages",
            "last error: 451 4.3.0 busy é Bare line long",
            "[...]",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        assert!(text.contains('é'), "UTF-8 kept");
    }

    #[test]
    fn the_cleared_mail_says_so() {
        let snap = QueueSnapshot::default();
        let mail = compose(&AlertMail {
            change: Change::Cleared,
            hostname: "relay.test",
            to: "postmaster@ops.example",
            threshold: 2000,
            clears_at: 1799,
            snapshot: &snap,
            now: 1_795_594_638,
        });
        let parsed = mail_parser::MessageParser::default()
            .parse(&mail[..])
            .unwrap();
        assert!(parsed.subject().unwrap().contains("back under threshold"));
        let text = parsed.body_text(0).unwrap().replace("\r\n", " ");
        assert!(text.contains("0 messages queued"), "{text}");
        assert!(!text.contains("Oldest"), "{text}");
        assert!(
            std::str::from_utf8(&mail)
                .unwrap()
                .contains("Content-Transfer-Encoding: 7bit")
        );
    }
}
