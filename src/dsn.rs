//! Delivery Status Notifications: the bytes of a bounce or delay warning (RFC 3464 in
//! a `multipart/report`, RFC 6522), sent back to the *original* sender.
//!
//! Pure: no I/O, the time is passed in. The caller decides who is reported with
//! [`recipients_to_report`] (NOTIFY, RFC 3461 §4.1), builds the message with
//! [`compose`] and spools it with `MAIL FROM:<>` (so a failing DSN never bounces again)
//! and `RCPT TO:<original_sender>`.
//!
//! # The message
//!
//! * `text/plain`: what happened, per recipient, for a person.
//! * `message/delivery-status`: the same for programs. Fields follow the RFC 3464
//!   grammar's order; `Original-Recipient` is the client's ORCPT, or else the RCPT TO it
//!   gave (the address the sender wrote, which they can recognise: Postfix does the
//!   same); `Final-Log-ID` is our queue id.
//! * the returned message: the header section as `text/rfc822-headers`; the whole message
//!   as `message/rfc822` for a failure with RET=FULL when it is at most
//!   [`MAX_RETURNED_MESSAGE`] octets and is plain lines (CRLF, no NUL, none over 998
//!   octets), else the headers after all. Delay warnings return the headers only: RET
//!   concerns failure DSNs (RFC 3461 §4.3).
//!
//! # Status codes
//!
//! From `Recipient::last_error` (formats in [`crate::delivery`]):
//!
//! * an enhanced code in the text (`"550 5.1.1 ..."`, or our own `"5.1.10 ..."`) is used
//!   as it is; if its class contradicts the reply code's, the reply code's class wins;
//! * a bare reply code gives `X.0.0`;
//! * text without any code names a connection problem at best: `X.4.1` (no answer from
//!   host) or `X.4.2` (bad connection), else the class alone (`X.0.0`).
//!
//! Then the class is made to fit the action: `delayed` is always 4; `failed` is 5,
//! except for an expiry (`"expired: ..."`), which keeps class 4 with `Action: failed`:
//! RFC 3463 defines class 4 as a persistent transient failure that caused "abandonment"
//! of delivery, RFC 3464 shows `4.4.7` with `Action: failed`, and Postfix reports expired
//! mail this way. An expiry keeps the enhanced code of its last error ("the code for the
//! actual problem ... should be returned rather than" 4.4.7, RFC 3463 §3.5) and falls
//! back to `4.4.7` (delivery time expired) when there is none.
//!
//! # Text safety
//!
//! Every line ends in CRLF and none exceeds 998 octets. Reply texts are put on one line
//! (controls become spaces), capped, and folded; inside `message/delivery-status`
//! non-ASCII becomes `?` and non-ASCII addresses use the `utf-8` address type with
//! RFC 6533 `\x{HEX}` escapes, so that part stays US-ASCII.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::spool::{Envelope, Recipient, RecipientState};
use crate::time::rfc5322_date;

/// The largest original message returned whole (RET=FULL). Postfix returns 50 kB and
/// Exim 100 kB by default; 1 MiB still passes every receiver's size limit, keeps the
/// DSN cheap to build and spool, and covers nearly all mail that is not a large
/// attachment, which the sender has anyway.
pub const MAX_RETURNED_MESSAGE: usize = 1024 * 1024;

/// The most of the original header section returned (cut at a line); the same as
/// Postfix's `header_size_limit`. Real header sections are a few kB; a "header" without
/// an end could otherwise be the whole message.
pub const MAX_RETURNED_HEADERS: usize = 100 * 1024;

/// RFC 5322 §2.1.1: the hard limit of a line, without its CRLF.
const MAX_LINE: usize = 998;
/// Where header fields and text are folded or wrapped when they can be.
const WRAP_AT: usize = 76;
/// Longest piece put on one line when a "word" has no place to fold: well under
/// [`MAX_LINE`] with any prefix.
const HARD_SPLIT: usize = 900;
/// Longest error text reported (characters); remote replies can be long multi-line
/// texts, and the DSN only needs enough to say what went wrong.
const MAX_DIAGNOSTIC: usize = 2000;

/// What happened to the recipients a DSN reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery was given up (permanent failure or expiry): a bounce.
    Failed,
    /// Delivery is still being retried: a warning.
    Delayed,
    /// Handed to a receiver that does not speak DSN, for a recipient whose NOTIFY asked
    /// for SUCCESS: the last notice the sender can get (RFC 3461 §4.1, "relayed").
    Relayed,
}

impl Action {
    fn field(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }

    /// The RFC 3461 NOTIFY keyword that asks for this kind of DSN.
    fn notify_keyword(self) -> &'static str {
        match self {
            Action::Failed => "FAILURE",
            Action::Delayed => "DELAY",
            Action::Relayed => "SUCCESS",
        }
    }

    /// The recipient state the action reports on.
    fn state(self) -> RecipientState {
        match self {
            Action::Failed => RecipientState::Failed,
            Action::Delayed => RecipientState::Pending,
            Action::Relayed => RecipientState::Delivered,
        }
    }
}

/// Everything one DSN is made of.
#[derive(Debug, Clone, Copy)]
pub struct DsnRequest<'a> {
    /// Our host name: `Reporting-MTA: dns; ...` and `From: MAILER-DAEMON@...`.
    pub reporting_mta: &'a str,
    pub envelope: &'a Envelope,
    /// Indices into `envelope.recipients` this DSN covers (from [`recipients_to_report`]).
    pub recipients: &'a [usize],
    pub action: Action,
    /// The spooled message (header section and body) as it was received.
    pub original: &'a [u8],
    /// Unix seconds: `Date:`, `Last-Attempt-Date:`.
    pub now: u64,
    /// For [`Action::Delayed`]: when retrying stops (`Will-Retry-Until:`), unix seconds.
    pub retry_until: Option<u64>,
}

/// The recipients among `candidates` (indices into `envelope.recipients`) that get a DSN
/// for `action`, in the given order, without duplicates.
///
/// None for the null sender (a DSN about a DSN would start a bounce loop). Otherwise a
/// recipient is reported when its state fits (`Failed` for [`Action::Failed`],
/// `Pending` for [`Action::Delayed`], `Delivered` for [`Action::Relayed`]) and its
/// NOTIFY asks for it: `NEVER` never, a list only with `FAILURE` resp. `DELAY` resp.
/// `SUCCESS` in it; no NOTIFY means `FAILURE,DELAY` (RFC 3461 §4.1 leaves delays to the
/// MTA; telling the sender that mail is stuck is the useful default).
pub fn recipients_to_report(
    envelope: &Envelope,
    candidates: &[usize],
    action: Action,
) -> Vec<usize> {
    if envelope.original_sender.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<usize> = Vec::new();
    for &i in candidates {
        let Some(r) = envelope.recipients.get(i) else {
            continue;
        };
        if r.state == action.state()
            && notify_allows(r.notify.as_deref(), action)
            && !out.contains(&i)
        {
            out.push(i);
        }
    }
    out
}

/// Whether a recipient's NOTIFY asks for a DSN of `action` (RFC 3461 §4.1; no NOTIFY
/// means `FAILURE,DELAY`).
pub(crate) fn notify_allows(notify: Option<&str>, action: Action) -> bool {
    let Some(notify) = notify.filter(|n| !n.trim().is_empty()) else {
        return action != Action::Relayed;
    };
    let wanted = action.notify_keyword();
    let mut allowed = false;
    for k in notify.split(',').map(str::trim) {
        if k.eq_ignore_ascii_case("NEVER") {
            return false;
        }
        allowed |= k.eq_ignore_ascii_case(wanted);
    }
    allowed
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
    push_field(
        &mut out,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{mta}>"),
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

// ---------------------------------------------------------------------------------
// Reading `last_error`

/// An RFC 3463 status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    class: u8,
    subject: u16,
    detail: u16,
}

impl Status {
    const fn new(class: u8, subject: u16, detail: u16) -> Status {
        Status {
            class,
            subject,
            detail,
        }
    }

    fn with_class(self, class: u8) -> Status {
        Status { class, ..self }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// What a recipient's `last_error` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Diagnosis {
    /// The delivery gave up at the end of the message's lifetime (`"expired: "`).
    expired: bool,
    /// The error on one line, without `"expired: "`, capped.
    text: String,
    /// The remote's reply, when `text` is one (`"550 5.1.1 ..."`), without our
    /// `"(in reply to ...)"` note.
    reply: Option<String>,
    /// The basic reply code of `reply`.
    code: Option<u16>,
    /// The enhanced status code at the start of the reply or of our own verdict.
    enhanced: Option<Status>,
}

fn diagnose(last_error: Option<&str>) -> Diagnosis {
    let one_line = clean_text(last_error.unwrap_or(""), false);
    let (expired, rest) = match one_line.strip_prefix("expired:") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, one_line.as_str()),
    };
    let text = cap(rest, MAX_DIAGNOSTIC);
    let (code, after_code) = match reply_code(&text) {
        Some((code, after)) => (Some(code), after),
        None => (None, text.as_str()),
    };
    let enhanced = enhanced_code(after_code);
    let reply = code.map(|_| without_note(&text).to_owned());
    Diagnosis {
        expired,
        reply,
        code,
        enhanced,
        text,
    }
}

/// A basic reply code (2xx..5xx) at the start of `s`, and the text after it.
fn reply_code(s: &str) -> Option<(u16, &str)> {
    let b = s.as_bytes();
    if b.len() < 3
        || !(b'2'..=b'5').contains(&b[0])
        || !b[1].is_ascii_digit()
        || !b[2].is_ascii_digit()
        || !matches!(b.get(3), None | Some(b' ' | b'-'))
    {
        return None;
    }
    let code = s[..3].parse().ok()?;
    Some((code, s[3..].trim_start_matches([' ', '-'])))
}

/// An enhanced status code (RFC 3463 §2: class 2, 4 or 5, then 1–3 and 1–3 digits) as
/// the first word of `s`.
fn enhanced_code(s: &str) -> Option<Status> {
    let word = s.split(' ').next()?;
    let mut parts = word.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !matches!(class, "2" | "4" | "5") {
        return None;
    }
    let number = |p: &str| -> Option<u16> {
        if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    Some(Status::new(
        class.parse().ok()?,
        number(subject)?,
        number(detail)?,
    ))
}

/// `text` without the note delivery appends to a remote reply: `" (in reply to RCPT
/// TO)"`, `" (in greeting)"`, possibly followed by `" from <host>"`.
fn without_note(text: &str) -> &str {
    for marker in [" (in reply to ", " (in greeting"] {
        let Some(start) = text.rfind(marker) else {
            continue;
        };
        let note = &text[start + 2..];
        let Some(close) = note.find(')') else {
            continue;
        };
        let after = &note[close + 1..];
        let tail_ok = after.is_empty()
            || after
                .strip_prefix(" from ")
                .is_some_and(|host| !host.is_empty() && !host.contains(' '));
        if tail_ok && !note[..close].contains('(') {
            return &text[..start];
        }
    }
    text
}

/// A code for text without one, from the words for connection trouble.
fn connection_code(text: &str) -> Option<Status> {
    let t = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["lost", "reset", "broken pipe", "closed"]) {
        Some(Status::new(4, 4, 2)) // bad connection
    } else if has(&["connect", "refused", "unreachable", "no route"]) {
        Some(Status::new(4, 4, 1)) // no answer from host
    } else if has(&["timeout", "timed out"]) {
        Some(Status::new(4, 4, 2))
    } else {
        None
    }
}

/// The `Status:` of a recipient (rules in the module documentation).
fn status_code(d: &Diagnosis, action: Action) -> Status {
    let found = match (d.code, d.enhanced) {
        (Some(code), Some(e)) => Some(e.with_class((code / 100) as u8)),
        (None, Some(e)) => Some(e),
        // An expiry's 4.4.7 says more than 4.0.0.
        (Some(_), None) if d.expired => None,
        (Some(code), None) => Some(Status::new((code / 100) as u8, 0, 0)),
        (None, None) => connection_code(&d.text),
    };
    match action {
        Action::Delayed => found.unwrap_or(Status::new(4, 0, 0)).with_class(4),
        Action::Failed if d.expired => found.unwrap_or(Status::new(4, 4, 7)).with_class(4),
        Action::Failed => found.unwrap_or(Status::new(5, 0, 0)).with_class(5),
        Action::Relayed => found.unwrap_or(Status::new(2, 0, 0)).with_class(2),
    }
}

// ---------------------------------------------------------------------------------
// The parts

fn human_part(
    req: &DsnRequest,
    mta: &str,
    reported: &[(&Recipient, Diagnosis)],
    full: bool,
) -> String {
    let env = req.envelope;
    let mut out = String::new();
    wrap(
        &mut out,
        "",
        &format!("This is the mail delivery system at {mta}."),
    );
    out.push_str("\r\n");
    let what = match req.action {
        Action::Failed => "Your message could not be delivered to the recipients listed below, \
             and delivery to them has been given up. The reason is given for each."
            .to_owned(),
        Action::Delayed => {
            let until = match req.retry_until {
                Some(t) => format!(
                    " If it still cannot be delivered by {}, it will be returned to you.",
                    glued(&rfc5322_date(t))
                ),
                None => String::new(),
            };
            format!(
                "Your message has not been delivered yet to the recipients listed below; \
                 delivery is being retried. This is a warning only: you do not need to \
                 send the message again.{until}"
            )
        }
        Action::Relayed => "Your message was handed on to the recipients' mail servers \
             listed below, as you asked to be told. Those servers do not send delivery \
             notifications, so this is the last notice you will get about it."
            .to_owned(),
    };
    wrap(&mut out, "", &what);
    out.push_str("\r\n");
    let attached = if full {
        "The message is"
    } else {
        "Its headers are"
    };
    wrap(
        &mut out,
        "",
        &format!(
            "The message arrived here on {} ({}). {attached} attached.",
            glued(&rfc5322_date(env.arrival)),
            glued(&format!("queue id {}", clean_token(&env.id)))
        ),
    );
    for (r, d) in reported {
        let address = clean_address(&r.address);
        let original = clean_address(&r.original);
        let who = if original.is_empty() || original.eq_ignore_ascii_case(&address) {
            format!("<{address}>:")
        } else {
            format!("<{original}> (forwarded to <{address}>):")
        };
        out.push_str("\r\n");
        wrap(&mut out, "", &who);
        wrap(&mut out, "    ", &reason(r, d, env.arrival));
    }
    out
}

fn reason(r: &Recipient, d: &Diagnosis, arrival: u64) -> String {
    let said = if d.text.is_empty() {
        "no reason was recorded".to_owned()
    } else if d.reply.is_some() {
        match &r.remote {
            Some(host) => format!("host {} said: {}", clean_token(host), d.text),
            None => format!("the receiving server said: {}", d.text),
        }
    } else {
        d.text.clone()
    };
    if d.expired {
        format!(
            "not delivered in time: tried since {}, then given up. Last error: {said}",
            glued(&rfc5322_date(arrival))
        )
    } else {
        said
    }
}

fn status_part(req: &DsnRequest, mta: &str, reported: &[(&Recipient, Diagnosis)]) -> String {
    let env = req.envelope;
    let mut out = String::new();
    // Per-message fields, in RFC 3464 §2.2's order.
    if let Some(id) = env.env_id.as_deref().filter(|id| !id.is_empty()) {
        // Stored decoded (smtp-proto undoes the xtext), as the field wants it (RFC 3461
        // §6.3); anything not printable US-ASCII can only be damage and becomes `?`.
        push_field(&mut out, "Original-Envelope-Id", &clean_text(id, true));
    }
    push_field(&mut out, "Reporting-MTA", &format!("dns; {mta}"));
    push_field(&mut out, "Arrival-Date", &rfc5322_date(env.arrival));
    for (r, d) in reported {
        out.push_str("\r\n");
        // RFC 3461 §4.2: the ORCPT the client gave; else the RCPT TO it gave.
        let original = r.orcpt.as_deref().unwrap_or(&r.original);
        if !original.is_empty() {
            push_field(&mut out, "Original-Recipient", &typed_address(original));
        }
        push_field(&mut out, "Final-Recipient", &typed_address(&r.address));
        push_field(&mut out, "Action", req.action.field());
        push_field(&mut out, "Status", &status_code(d, req.action).to_string());
        if let Some(host) = r
            .remote
            .as_deref()
            .map(remote_host)
            .filter(|h| !h.is_empty())
        {
            push_field(&mut out, "Remote-MTA", &format!("dns; {host}"));
        }
        if let Some(reply) = &d.reply {
            push_field(
                &mut out,
                "Diagnostic-Code",
                &format!("smtp; {}", clean_text(reply, true)),
            );
        } else if !d.text.is_empty() {
            // Our own verdict, not a remote's reply: a private diagnostic type, as
            // Postfix's "X-Postfix;".
            push_field(
                &mut out,
                "Diagnostic-Code",
                &format!("X-srs-relay; {}", clean_text(&d.text, true)),
            );
        }
        if env.attempts > 0 {
            push_field(&mut out, "Last-Attempt-Date", &rfc5322_date(req.now));
        }
        push_field(&mut out, "Final-Log-ID", &clean_token(&env.id));
        if req.action == Action::Delayed
            && let Some(until) = req.retry_until
        {
            push_field(&mut out, "Will-Retry-Until", &rfc5322_date(until));
        }
    }
    out
}

/// `mx.example.com` from `mx.example.com[192.0.2.1]:25` (how delivery names a host).
fn remote_host(remote: &str) -> String {
    let host = match remote.split_once('[') {
        Some(("", rest)) => rest.split(']').next().unwrap_or(""),
        Some((name, _)) => name,
        None => remote,
    };
    clean_token(host)
}

/// `rfc822; addr`, or for an address that is not ASCII `utf-8; ` with RFC 6533's
/// utf-8-addr-xtext (`\x{HEX}` for `+`, `=`, `\`, space and every non-ASCII character),
/// which message/delivery-status allows.
fn typed_address(address: &str) -> String {
    let address = clean_address(address);
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:02X}}}", c as u32);
        }
    }
    out
}

/// The original's header section: CRLF lines, NUL and stray CR as spaces, lines over
/// 998 octets folded, at most [`MAX_RETURNED_HEADERS`].
fn header_section(original: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines(original) {
        if line.is_empty() {
            break;
        }
        if out.len() + line.len() + 2 > MAX_RETURNED_HEADERS {
            break;
        }
        let line: Vec<u8> = line
            .iter()
            .map(|&b| if b == 0 || b == b'\r' { b' ' } else { b })
            .collect();
        push_long_line(&mut out, &line);
    }
    out
}

/// The whole original as CRLF lines, when it may be returned as message/rfc822.
fn returnable_message(original: &[u8]) -> Option<Vec<u8>> {
    if original.len() > MAX_RETURNED_MESSAGE || original.contains(&0) {
        return None;
    }
    let mut out = Vec::with_capacity(original.len() + 2);
    for line in lines(original) {
        if line.len() > MAX_LINE || line.contains(&b'\r') {
            return None;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}

/// The lines of `data`, split at LF, a CR before it removed; no empty last line.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let empty = data.is_empty();
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(move |_| !empty)
}

/// One header line of the original, folded (before white space where there is some)
/// so that no line exceeds [`MAX_LINE`].
fn push_long_line(out: &mut Vec<u8>, mut line: &[u8]) {
    while line.len() > MAX_LINE {
        let window = &line[..HARD_SPLIT];
        match window
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .filter(|&i| i > 0)
        {
            // A real fold: the white space starts the continuation line.
            Some(i) => {
                out.extend_from_slice(&line[..i]);
                out.extend_from_slice(b"\r\n");
                line = &line[i..];
            }
            // Nowhere to fold: break anyway (not inside a UTF-8 sequence); unfolding
            // adds a space, harmless in a copy returned for information.
            None => {
                let mut i = HARD_SPLIT;
                while i > HARD_SPLIT - 4 && (line[i] & 0xC0) == 0x80 {
                    i -= 1;
                }
                out.extend_from_slice(&line[..i]);
                out.extend_from_slice(b"\r\n ");
                line = &line[i..];
            }
        }
    }
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// The first `Message-ID:` of a header section, when it looks like one.
fn original_message_id(headers: &[u8]) -> Option<String> {
    let mut value: Option<String> = None;
    for line in lines(headers) {
        match &mut value {
            Some(v) if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') => {
                v.push_str(&String::from_utf8_lossy(line));
            }
            Some(_) => break,
            None => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    continue;
                };
                if line[..colon]
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"Message-ID")
                {
                    value = Some(String::from_utf8_lossy(&line[colon + 1..]).into_owned());
                }
            }
        }
    }
    let id = value?;
    let id = id.trim();
    let inner = id.strip_prefix('<')?.strip_suffix('>')?;
    let plain = inner.len() <= HARD_SPLIT / 2
        && !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    plain.then(|| id.to_owned())
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
fn boundary_from(env: &Envelope, now: u64, parts: &[&[u8]], mut seq: u64) -> String {
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

// ---------------------------------------------------------------------------------
// Text

/// `Name: value` + CRLF, folded at spaces near [`WRAP_AT`] (RFC 5322 §2.2.3), a word
/// too long for a line split so that no line exceeds [`MAX_LINE`].
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut column = name.len() + 1;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        for piece in pieces(word) {
            if column + 1 + piece.len() > WRAP_AT && column > name.len() + 1 {
                out.push_str("\r\n");
                column = 0;
            }
            out.push(' ');
            out.push_str(piece);
            column += 1 + piece.len();
        }
    }
    out.push_str("\r\n");
}

/// `text` as CRLF lines of at most [`WRAP_AT`] columns where the words allow, each
/// starting with `indent`. A [`GLUE`] is a space that does not break a line.
fn wrap(out: &mut String, indent: &str, text: &str) {
    let mut column = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        for piece in pieces(word) {
            if column > 0 && column + 1 + piece.len() > WRAP_AT {
                out.push_str("\r\n");
                column = 0;
            }
            if column == 0 {
                out.push_str(indent);
                column = indent.len();
            } else {
                out.push(' ');
                column += 1;
            }
            out.extend(piece.chars().map(|c| if c == GLUE { ' ' } else { c }));
            column += piece.len();
        }
    }
    out.push_str("\r\n");
}

/// Stands for a space that [`wrap`] must not break at. Any no-break space of the
/// texts themselves is a plain space by then ([`clean_text`]).
const GLUE: char = '\u{a0}';

/// `s` kept on one line by [`wrap`].
fn glued(s: &str) -> String {
    s.replace(' ', "\u{a0}")
}

/// `word` in pieces of at most [`HARD_SPLIT`] octets, split between characters.
fn pieces(word: &str) -> impl Iterator<Item = &str> {
    let mut rest = word;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(HARD_SPLIT);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// `s` on one line: control characters (CR, LF, TAB, ...) become spaces, runs of white
/// space one space, no space at either end; with `ascii`, non-ASCII becomes `?`.
fn clean_text(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else if ascii && !c.is_ascii() {
            '?'
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

/// An address for the text and headers: without control characters or surrounding
/// white space (an address can hold a space only in a quoted local part).
fn clean_address(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    s.trim().to_owned()
}

/// A host name or queue id: printable ASCII only, at most 255 characters.
fn clean_token(s: &str) -> String {
    s.chars().filter(char::is_ascii_graphic).take(255).collect()
}

/// A queue id as a part of a boundary or Message-ID: letters, digits, `-` and `_` (what
/// [`Spool::new_id`](crate::spool::Spool::new_id) makes anyway).
fn id_token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(64)
        .collect()
}

/// At most `max` characters of `s`, marked when cut.
fn cap(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{} [...]", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
