//! What the delivery module's unit tests share.

use crate::spool::{ClientInfo, Envelope, Recipient};

/// A message from `s@example.org` to `rcpts`, all pending, queued at time 1000.
pub(super) fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        id: "t1".into(),
        arrival: 1000,
        original_sender: "s@example.org".into(),
        sender: "s@example.org".into(),
        recipients: rcpts.iter().map(|a| Recipient::pending(*a, *a)).collect(),
        client: ClientInfo {
            ip: "127.0.0.1".into(),
            helo: "h".into(),
            tls: None,
        },
        attempts: 0,
        next_attempt: 1000,
        size: 10,
        env_id: None,
        ret_full: false,
        delay_warned: false,
        dsn_owed: Vec::new(),
        held_since: None,
        held_secs: 0,
        sender_authenticated: None,
    }
}
