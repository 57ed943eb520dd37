//! The two reports in a DSN: the text for a person and the `message/delivery-status`
//! fields for programs.

use std::fmt::Write as _;

use super::compose::DsnRequest;
use super::recipients::Action;
use super::status::{Diagnosis, status_code};
use super::text::{clean_address, clean_text, clean_token, glued, push_field, wrap};
use crate::spool::Recipient;
use crate::time::rfc5322_date;

pub(super) fn human_part(
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

pub(super) fn status_part(
    req: &DsnRequest,
    mta: &str,
    reported: &[(&Recipient, Diagnosis)],
) -> String {
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
