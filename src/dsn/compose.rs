//! The DSN message: its header and the `multipart/report` that holds the parts.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::parts::{human_part, status_part};
use super::recipients::Action;
use super::returned::{header_section, original_message_id, returnable_message};
use super::status::{Diagnosis, diagnose};
use super::text::{clean_address, clean_token, id_token, push_field};
use crate::spool::{Envelope, Recipient};
use crate::time::rfc5322_date;

/// Everything one DSN is made of.
#[derive(Debug, Clone, Copy)]
pub struct DsnRequest<'a> {
    /// Our host name: `Reporting-MTA: dns; ...` and `From: MAILER-DAEMON@...`.
    pub reporting_mta: &'a str,
    /// The domain of `From: MAILER-DAEMON@...` instead of `reporting_mta`: the domain
    /// the DSN is DKIM-signed for, so that DMARC aligns.
    pub from_domain: Option<&'a str>,
    pub envelope: &'a Envelope,
    /// Indices into `envelope.recipients` this DSN covers (from
    /// [`recipients_to_report`](super::recipients_to_report)).
    pub recipients: &'a [usize],
    pub action: Action,
    /// The spooled message (header section and body) as it was received.
    pub original: &'a [u8],
    /// Unix seconds: `Date:`, `Last-Attempt-Date:`.
    pub now: u64,
    /// For [`Action::Delayed`]: when retrying stops (`Will-Retry-Until:`), unix seconds.
    pub retry_until: Option<u64>,
}

/// The complete DSN message, CRLF line endings, ready to spool (see the module
/// documentation). It contains 8-bit octets only when the returned original, an
/// address or an error text does; the delivery client then asks for 8BITMIME /
/// SMTPUTF8 as for any message.
///
/// `None` when there is nothing to send: a null sender, or no index in `recipients`
/// that names a recipient.
pub fn compose(req: &DsnRequest) -> Option<Vec<u8>> {
    let env = req.envelope;
    if env.original_sender.is_empty() {
        return None;
    }
    let mut reported: Vec<(&Recipient, Diagnosis)> = Vec::new();
    let mut seen: Vec<usize> = Vec::new();
    for &i in req.recipients {
        if let Some(r) = env.recipients.get(i)
            && !seen.contains(&i)
        {
            seen.push(i);
            reported.push((r, diagnose(r.last_error.as_deref())));
        }
    }
    if reported.is_empty() {
        return None;
    }
    let mta = match clean_token(req.reporting_mta) {
        m if m.is_empty() => "localhost".to_owned(),
        m => m,
    };
    let headers = header_section(req.original);
    let original_id = original_message_id(&headers);
    let full = (req.action == Action::Failed && env.ret_full)
        .then(|| returnable_message(req.original))
        .flatten();

    let text = human_part(req, &mta, &reported, full.is_some());
    let status = status_part(req, &mta, &reported);
    let (returned, returned_type, what) = match full {
        Some(m) => (m, "message/rfc822", "Message"),
        None => (headers, "text/rfc822-headers", "Message Headers"),
    };
    let text_8bit = !text.is_ascii();
    let returned_8bit = !returned.is_ascii();
    let parts: [&[u8]; 3] = [text.as_bytes(), status.as_bytes(), &returned];
    let boundary = boundary(env, req.now, &parts);

    let mut out = String::with_capacity(2048);
    let from_domain = match req.from_domain.map(clean_token) {
        Some(d) if !d.is_empty() => d,
        _ => mta.clone(),
    };
    push_field(
        &mut out,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{from_domain}>"),
    );
    push_field(
        &mut out,
        "To",
        &format!("<{}>", clean_address(&env.original_sender)),
    );
    let subject = match req.action {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        Action::Relayed => "Successful Mail Delivery Report",
    };
    push_field(&mut out, "Subject", subject);
    push_field(&mut out, "Date", &rfc5322_date(req.now));
    push_field(
        &mut out,
        "Message-ID",
        &message_id(env, req.action, req.now, &mta),
    );
    if let Some(id) = original_id {
        push_field(&mut out, "In-Reply-To", &id);
        push_field(&mut out, "References", &id);
    }
    // RFC 3834 §5: a DSN is an automatic reply; responders must not answer it.
    push_field(&mut out, "Auto-Submitted", "auto-replied");
    push_field(&mut out, "MIME-Version", "1.0");
    push_field(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    if text_8bit || returned_8bit {
        // A multipart's encoding must be the widest of its parts' (RFC 2045 §6.4).
        push_field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    let _ = write!(out, "--{boundary}\r\n");
    push_field(&mut out, "Content-Description", "Notification");
    let charset = if text_8bit { "utf-8" } else { "us-ascii" };
    push_field(
        &mut out,
        "Content-Type",
        &format!("text/plain; charset={charset}"),
    );
    if text_8bit {
        push_field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.push_str("\r\n");
    out.push_str(&text);

    let _ = write!(out, "\r\n--{boundary}\r\n");
    push_field(&mut out, "Content-Description", "Delivery report");
    push_field(&mut out, "Content-Type", "message/delivery-status");
    out.push_str("\r\n");
    out.push_str(&status);

    let _ = write!(out, "\r\n--{boundary}\r\n");
    let state = match req.action {
        Action::Failed => "Undelivered",
        Action::Delayed => "Delayed",
        Action::Relayed => "Relayed",
    };
    push_field(&mut out, "Content-Description", &format!("{state} {what}"));
    push_field(&mut out, "Content-Type", returned_type);
    if returned_8bit {
        // Returned as it came: message/rfc822 may not be encoded (RFC 2046 §5.2.1), and
        // headers read best verbatim. 8-bit headers are UTF-8 ones (RFC 6532) or legacy
        // raw 8-bit; RFC 6533's message/global(-headers) would be the strict types for
        // the former, but fewer readers know them than the classic types.
        push_field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.push_str("\r\n");
    let mut message = out.into_bytes();
    message.extend_from_slice(&returned); // empty, or lines ending in CRLF
    message.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Some(message)
}

fn message_id(env: &Envelope, action: Action, now: u64, mta: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let kind = match action {
        Action::Failed => 'f',
        Action::Delayed => 'd',
        Action::Relayed => 'r',
    };
    // The pid keeps ids apart across a restart within the same second.
    format!(
        "<dsn.{kind}.{}.{now}.{}.{seq}@{mta}>",
        id_token(&env.id),
        std::process::id()
    )
}

/// A boundary that occurs in none of `parts`.
fn boundary(env: &Envelope, now: u64, parts: &[&[u8]]) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // Spaced out so that the candidates one DSN may skip are not the next one's.
    let start = SEQ.fetch_add(1 << 16, Ordering::Relaxed);
    boundary_from(env, now, parts, start)
}

/// The first of `=_dsn_<id>_<now>_<seq>` from `seq` on that occurs in none of `parts`.
/// `=_` cannot occur in quoted-printable or base64 text, so a clash needs the very
/// string: content made to collide only costs a few more candidates.
pub(super) fn boundary_from(env: &Envelope, now: u64, parts: &[&[u8]], mut seq: u64) -> String {
    let id: String = id_token(&env.id).chars().take(24).collect();
    loop {
        let candidate = format!("=_dsn_{id}_{now:x}_{seq:x}");
        let clash = parts
            .iter()
            .any(|p| memchr::memmem::find(p, candidate.as_bytes()).is_some());
        if !clash {
            return candidate;
        }
        seq = seq.wrapping_add(1);
    }
}
