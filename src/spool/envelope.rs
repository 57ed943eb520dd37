//! The envelope: its types, and the JSON line that holds it on disk (encode and parse).

use std::io;

use serde::{Deserialize, Serialize};

/// The `version` written into every envelope line.
pub(super) const FORMAT_VERSION: u32 = 2;
/// The version before: `<id>.env` + `<id>.msg`, converted on open.
pub(super) const FORMAT_V1: u32 = 1;

/// One queued message: who it is from, where it goes, and how delivery is going.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Queue id (from [`Spool::new_id`](super::Spool::new_id)).
    pub id: String,
    /// Arrival time, unix seconds.
    pub arrival: u64,
    /// MAIL FROM as given (`""` = null sender).
    pub original_sender: String,
    /// Rewritten (SRS) sender used for delivery (`""` = null sender).
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub client: ClientInfo,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Next delivery attempt, unix seconds.
    pub next_attempt: u64,
    /// Message size in octets.
    pub size: u64,
    /// DSN ENVID, if given.
    pub env_id: Option<String>,
    /// DSN RET=FULL (otherwise RET=HDRS).
    pub ret_full: bool,
    /// The sender has had its "delayed" DSN (one per message).
    #[serde(default)]
    pub delay_warned: bool,
    /// Reports whose DSN could not be spooled yet (disk full): made again at the next
    /// attempt, before the message may leave the spool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dsn_owed: Vec<OwedDsn>,
    /// On hold since (unix seconds), by the postmaster (`srs-relay queue hold`): not
    /// attempted and not expiring until released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<u64>,
    /// Seconds spent on hold before the last release: the lifetime and the delay warning
    /// count from `arrival + held_secs`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_secs: u64,
    /// Whether the sender was authenticated at arrival (SPF pass for MAIL FROM, or a DKIM
    /// pass aligned with the header From); `None`: not checked (`[auth]` off). A DSN for
    /// an unauthenticated sender is dropped unless `dsn.to_unauthenticated = "send"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_authenticated: Option<bool>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A DSN still to be made: why, and for which recipients (indices into `recipients`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedDsn {
    pub reason: OwedReason,
    pub recipients: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwedReason {
    /// Failed with a 5xx.
    Permanent,
    /// Failed at the end of `max_lifetime`.
    Expired,
    /// Still pending at `delay_warning`.
    Delayed,
}

/// One recipient of a queued message and its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    /// Where to deliver.
    pub address: String,
    /// The RCPT TO address the client gave (alias, SRS bounce address, ...).
    pub original: String,
    pub state: RecipientState,
    /// Last reply or error text.
    pub last_error: Option<String>,
    /// The remote MTA that gave `last_error` (or accepted the message).
    pub remote: Option<String>,
    /// DSN NOTIFY value as given, if any.
    pub notify: Option<String>,
    /// DSN ORCPT address as given (type rfc822, xtext-decoded), if any.
    #[serde(default)]
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient still to be delivered, with no DSN request.
    pub fn pending(address: impl Into<String>, original: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            original: original.into(),
            state: RecipientState::Pending,
            last_error: None,
            remote: None,
            notify: None,
            orcpt: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    Pending,
    Delivered,
    Failed,
}

/// The SMTP client the message came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub ip: String,
    pub helo: String,
    /// TLS protocol and cipher, e.g. `"TLSv1.3 TLS13_AES_256_GCM_SHA384"`; `None` = plain text.
    pub tls: Option<String>,
}

impl Envelope {
    /// A message the relay itself sends (a DSN, a queue alert): from the null sender `<>`
    /// to `to`, made by `hostname`, due at once.
    pub fn from_null_sender(to: &str, hostname: &str, now: u64, size: u64) -> Envelope {
        Envelope {
            id: super::Spool::new_id(),
            arrival: now,
            original_sender: String::new(),
            sender: String::new(),
            recipients: vec![Recipient::pending(to, to)],
            client: ClientInfo {
                ip: "127.0.0.1".into(),
                helo: hostname.to_owned(),
                tls: None,
            },
            attempts: 0,
            next_attempt: now,
            size,
            env_id: None,
            ret_full: false,
            delay_warned: false,
            dsn_owed: Vec::new(),
            held_since: None,
            held_secs: 0,
            sender_authenticated: None,
        }
    }

    /// When the message's lifetime started: its arrival, moved on by the time it spent
    /// on hold.
    pub fn lifetime_start(&self) -> u64 {
        self.arrival.saturating_add(self.held_secs)
    }

    /// True when no recipient is pending any more (all delivered or failed) and no DSN
    /// is owed.
    pub fn is_done(&self) -> bool {
        self.pending().next().is_none() && self.dsn_owed.is_empty()
    }

    /// The recipients still waiting for delivery.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.state == RecipientState::Pending)
    }
}

#[derive(Serialize)]
struct EnvelopeFile<'a> {
    version: u32,
    /// Octets after the envelope line: in queue files only.
    #[serde(skip_serializing_if = "Option::is_none")]
    message_len: Option<u64>,
    #[serde(flatten)]
    envelope: &'a Envelope,
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
    #[serde(default)]
    message_len: Option<u64>,
}

/// The envelope of a queue file of `total` octets whose first line is `line`: it must end
/// in "\n", parse as this version's envelope naming `id`, and be followed by exactly
/// `message_len` octets.
pub(super) fn queue_file_header(line: &[u8], id: &str, total: u64) -> Option<Envelope> {
    let (env, len) = parse_line(line, id, FORMAT_VERSION)?;
    let rest = total.checked_sub(line.len() as u64)?;
    (line.last() == Some(&b'\n') && len == Some(rest)).then_some(env)
}

/// A whole queue file's envelope and message, if it is whole (what recovery keeps).
#[cfg(feature = "fuzzing")]
pub(crate) fn split_queue_file<'a>(bytes: &'a [u8], id: &str) -> Option<(Envelope, &'a [u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')? + 1;
    let env = queue_file_header(&bytes[..end], id, bytes.len() as u64)?;
    Some((env, &bytes[end..]))
}

/// An envelope line (with or without its "\n") of `version`, if it parses and names
/// `id`; with the `message_len` it carries (queue files do, state files do not).
pub(crate) fn parse_line(bytes: &[u8], id: &str, version: u32) -> Option<(Envelope, Option<u64>)> {
    let probe: VersionProbe = serde_json::from_slice(bytes).ok()?;
    if probe.version != version {
        return None;
    }
    let env: Envelope = serde_json::from_slice(bytes).ok()?;
    (env.id == id).then_some((env, probe.message_len))
}

/// The envelope line for `env`, "\n" included; `message_len` for a queue file.
pub(crate) fn encode_line(env: &Envelope, message_len: Option<u64>) -> io::Result<Vec<u8>> {
    let mut json = serde_json::to_vec(&EnvelopeFile {
        version: FORMAT_VERSION,
        message_len,
        envelope: env,
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    json.push(b'\n');
    Ok(json)
}
