//! Status inference: what a recipient's `last_error` says, and the RFC 3463 `Status:`
//! code it gets (rules in the module documentation).

use super::recipients::Action;
use super::text::{cap, clean_text};

/// Longest error text reported (characters); remote replies can be long multi-line
/// texts, and the DSN only needs enough to say what went wrong.
pub(super) const MAX_DIAGNOSTIC: usize = 2000;

/// An RFC 3463 status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Status {
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
pub(super) struct Diagnosis {
    /// The delivery gave up at the end of the message's lifetime (`"expired: "`).
    pub(super) expired: bool,
    /// The error on one line, without `"expired: "`, capped.
    pub(super) text: String,
    /// The remote's reply, when `text` is one (`"550 5.1.1 ..."`), without our
    /// `"(in reply to ...)"` note.
    pub(super) reply: Option<String>,
    /// The basic reply code of `reply`.
    pub(super) code: Option<u16>,
    /// The enhanced status code at the start of the reply or of our own verdict.
    pub(super) enhanced: Option<Status>,
}

pub(super) fn diagnose(last_error: Option<&str>) -> Diagnosis {
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
pub(super) fn enhanced_code(s: &str) -> Option<Status> {
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
pub(super) fn status_code(d: &Diagnosis, action: Action) -> Status {
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
