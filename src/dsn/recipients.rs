//! Who a DSN reports: the kinds of DSN ([`Action`]) and the NOTIFY rules.

use crate::spool::{Envelope, RecipientState};

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
    pub(super) fn field(self) -> &'static str {
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
    pub(super) fn state(self) -> RecipientState {
        match self {
            Action::Failed => RecipientState::Failed,
            Action::Delayed => RecipientState::Pending,
            Action::Relayed => RecipientState::Delivered,
        }
    }
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
