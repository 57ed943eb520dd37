//! The trace's event model: one row per event, linked by queue id and Message-ID. No
//! message body and no secret goes in here.

use std::time::{SystemTime, UNIX_EPOCH};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client connected (peer, TLS version and cipher or none).
    Connection,
    /// A message was spooled for a recipient (one event per recipient).
    Received,
    /// A recipient or a message was refused at RCPT or DATA (reply and reason).
    Refused,
    /// A bounce to one of our SRS addresses went on to the original sender.
    BounceReversed,
    Delivered,
    Deferred,
    Failed,
    /// A DSN went back to the sender (`detail` holds its kind and queue id).
    DsnSent,
    /// Not delivered within `queue.max_lifetime`.
    Expired,
    /// Put on hold by the postmaster (`srs-relay queue hold`); one event per pending
    /// recipient, as are the three below.
    Held,
    /// Released from hold.
    Released,
    /// Removed from the queue by the postmaster, without a DSN.
    Deleted,
    /// The postmaster asked for an attempt now.
    Retry,
}

impl Kind {
    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Received => "received",
            Kind::Refused => "refused",
            Kind::BounceReversed => "bounce_reversed",
            Kind::Delivered => "delivered",
            Kind::Deferred => "deferred",
            Kind::Failed => "failed",
            Kind::DsnSent => "dsn_sent",
            Kind::Expired => "expired",
            Kind::Held => "held",
            Kind::Released => "released",
            Kind::Deleted => "deleted",
            Kind::Retry => "retry",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "connection" => Kind::Connection,
            "received" => Kind::Received,
            "refused" => Kind::Refused,
            "bounce_reversed" => Kind::BounceReversed,
            "delivered" => Kind::Delivered,
            "deferred" => Kind::Deferred,
            "failed" => Kind::Failed,
            "dsn_sent" => Kind::DsnSent,
            "expired" => Kind::Expired,
            "held" => Kind::Held,
            "released" => Kind::Released,
            "deleted" => Kind::Deleted,
            "retry" => Kind::Retry,
            _ => return None,
        })
    }
}

/// One event. Addresses are kept lower-cased (the trace is searched, not replayed);
/// fields that do not apply stay `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    pub kind: Kind,
    pub queue_id: Option<String>,
    /// Without the angle brackets.
    pub message_id: Option<String>,
    /// Envelope sender as given (`""` for the null sender).
    pub sender: Option<String>,
    /// The sender the message left with (SRS-rewritten, or as given).
    pub srs_sender: Option<String>,
    /// The address delivered to (after alias expansion or SRS reversal).
    pub recipient: Option<String>,
    /// The address as given at RCPT.
    pub original_recipient: Option<String>,
    pub subject: Option<String>,
    /// The client (`ip`, HELO) or the next hop (`host[ip]:port`).
    pub remote: Option<String>,
    /// The SMTP reply given or received.
    pub reply: Option<String>,
    /// TLS version and cipher, if any.
    pub tls: Option<String>,
    /// Delivery attempt number, from 1.
    pub attempt: Option<u32>,
    /// Message size in octets.
    pub size: Option<u64>,
    /// `bounced` on a received event of a reversed bounce; otherwise `None`.
    pub status: Option<String>,
    /// Anything else, as a JSON object (reason, delay, DSN kind, ...).
    pub detail: Option<String>,
}

impl Event {
    /// An event of `kind`, now, with every other field empty.
    pub fn new(kind: Kind) -> Event {
        Event {
            time: now_ms(),
            kind,
            queue_id: None,
            message_id: None,
            sender: None,
            srs_sender: None,
            recipient: None,
            original_recipient: None,
            subject: None,
            remote: None,
            reply: None,
            tls: None,
            attempt: None,
            size: None,
            status: None,
            detail: None,
        }
    }

    pub fn queue_id(mut self, id: &str) -> Event {
        self.queue_id = Some(id.to_owned());
        self
    }

    pub fn recipient(mut self, address: &str) -> Event {
        self.recipient = Some(address.to_ascii_lowercase());
        self
    }

    pub fn original_recipient(mut self, address: &str) -> Event {
        self.original_recipient = Some(address.to_ascii_lowercase());
        self
    }

    pub fn sender(mut self, address: &str) -> Event {
        self.sender = Some(address.to_ascii_lowercase());
        self
    }

    pub fn srs_sender(mut self, address: &str) -> Event {
        self.srs_sender = Some(address.to_ascii_lowercase());
        self
    }

    pub fn remote(mut self, remote: &str) -> Event {
        self.remote = Some(remote.to_owned());
        self
    }

    pub fn reply(mut self, reply: &str) -> Event {
        self.reply = Some(reply.to_owned());
        self
    }

    /// `detail` as a JSON object of string pairs.
    pub fn detail(self, pairs: &[(&str, &str)]) -> Event {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        self.detail_json(map)
    }

    /// `detail` as a JSON object of any values.
    pub fn detail_json(mut self, map: serde_json::Map<String, serde_json::Value>) -> Event {
        self.detail = Some(serde_json::Value::Object(map).to_string());
        self
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
