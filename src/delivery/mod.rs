//! Outbound delivery: the retry scheduler, the route to each destination (smarthost or
//! MX lookup) and the SMTP client.
//!
//! # Failure semantics
//!
//! The queue holds envelopes (small) in memory and reads each message body from the
//! spool only for the attempt that sends it. An *attempt* takes an envelope's pending
//! recipients, groups them by destination (the smarthost for all, else the recipient's
//! domain) and sends each group in **one** SMTP transaction; destinations are worked on
//! concurrently, under a global limit and a per-destination limit.
//!
//! For each recipient an attempt ends in one of three ways:
//!
//! * **delivered**: the receiver answered 2xx after the final dot;
//! * **deferred** (stays pending): a 4xx reply, a timeout, a refused or lost connection,
//!   a DNS failure, STARTTLS missing or failing while `tls.require_outbound` is set —
//!   anything that may go away by itself;
//! * **failed**: a 5xx reply to MAIL, RCPT, DATA or the final dot, a null MX (RFC 7505),
//!   a domain that does not exist, a message larger than the receiver's SIZE.
//!
//! Problems before the transaction starts (connect, greeting, EHLO, STARTTLS, a 4xx to
//! MAIL) move on to the next MX host or address; once RCPT has been answered, the host's
//! answers stand. A 5xx greeting is skipped like Postfix's `smtp_skip_5xx_greeting`.
//!
//! After the attempt, in this order:
//!
//! 1. `attempts += 1`; if recipients are still pending, `next_attempt = now +
//!    retry_intervals[min(attempts - 1, len - 1)]`, but never later than the end of the
//!    message's lifetime (so the last try happens on time);
//! 2. pending recipients of a message older than `max_lifetime` fail as
//!    `"expired: <last error>"`;
//! 3. the envelope is written with [`Spool::update`](crate::spool::Spool::update), unless
//!    nothing is pending any more (then step 5 removes it; a crash before that repeats
//!    the attempt: a duplicate, never a loss);
//! 4. every recipient that failed in this attempt is reported, once, through the
//!    `on_failure` callback (one [`FailureReport`] for permanent failures, one for
//!    expiries), on a blocking thread and **before** the message is removed, so the
//!    callback may still read it from the spool (to build a DSN); so are, once per
//!    message, the recipients still pending `delay_warning` after arrival (a
//!    [`FailureReason::Delayed`] report; `delay_warned` is set in step 3);
//! 5. an envelope with no pending recipient left is removed from the spool.
//!
//! A crash between sending and step 3 delivers again on restart (a duplicate, never a
//! loss). On shutdown, attempts waiting for a connection slot are dropped untouched and
//! attempts under way get `shutdown_grace` to finish before they are cut.
//!
//! `Recipient::last_error` holds either the remote's reply, `"NNN X.Y.Z text (in reply
//! to COMMAND)"` with `remote` naming the host, or our own verdict, `"X.Y.Z text"` (an
//! RFC 3463 status first, e.g. `"5.1.10 ..."` for a null MX, `"4.4.1 connect to ..."`).
//! After a delivery it holds the accepting reply.

mod attempt;
mod client;
mod connections;
pub mod control;
mod dns;
mod message;
mod outcome;
mod queue;
mod snapshot;
#[cfg(test)]
mod testing;
mod tls;

use std::time::Duration;

use crate::config::{self, Config, ConfigError};
use crate::spool::Envelope;

pub use dns::{BoxFuture, DnsError, DnsSettings, Resolve, SystemResolver, build_resolver};
pub use queue::{Queue, QueueHandle, start};
pub use snapshot::{DestinationCount, QueueSnapshot};

/// Everything delivery needs from the configuration, in its final types.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// `host:port` receiving all mail (`relay.smarthost`); `None` looks up MX records.
    pub smarthost: Option<String>,
    /// `relay.routes`: (domain, `host:port`), checked before the smarthost and MX.
    pub routes: Vec<(String, String)>,
    /// Waits between attempts; the last one repeats (`queue.retry_intervals`).
    pub retry_intervals: Vec<Duration>,
    /// A recipient still pending this long after arrival fails (`queue.max_lifetime`).
    pub max_lifetime: Duration,
    /// Pending this long after arrival: reported once as [`FailureReason::Delayed`]
    /// (`queue.delay_warning`; `None`: never).
    pub delay_warning: Option<Duration>,
    /// Connections under way at once, in all (`queue.max_concurrent_deliveries`).
    pub max_concurrent_deliveries: usize,
    /// Connections under way at once to one destination (`queue.max_per_destination`).
    pub max_per_destination: usize,
    /// TCP connect timeout (`queue.connect_timeout`).
    pub connect_timeout: Duration,
    /// Wait for each reply, and for each block of DATA to be written
    /// (`queue.connect_timeout`).
    pub command_timeout: Duration,
    /// Wait for the reply after the final dot: at least 10 minutes (RFC 5321 §4.5.3.2.6).
    pub data_done_timeout: Duration,
    /// How long a session waits for the next message to its address; `None`: one message
    /// per session (`queue.connection_cache_time`).
    pub connection_cache_time: Option<Duration>,
    /// No new message over a session this old (`queue.connection_reuse_time`).
    pub connection_reuse_time: Duration,
    /// Our name in EHLO (`server.hostname`).
    pub ehlo_name: String,
    /// Defer rather than deliver over a connection without TLS (`tls.require_outbound`).
    pub require_tls: bool,
    /// Port of MX hosts: 25, except in tests.
    pub mx_port: u16,
    /// How long [`QueueHandle::shutdown`] lets attempts under way finish
    /// (`server.shutdown_grace`).
    pub shutdown_grace: Duration,
    /// Where delivery events go (`[trace]`); set by the caller, disabled by default.
    pub tracer: crate::trace::Tracer,
    /// `[dns]`: the resolver of MX and address lookups.
    pub dns: dns::DnsSettings,
}

impl DeliverySettings {
    /// The settings the configuration describes; errors name the key.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let retry_intervals = cfg
            .queue
            .retry_intervals
            .iter()
            .map(|r| config::duration("queue.retry_intervals", r))
            .collect::<Result<Vec<_>, _>>()?;
        if retry_intervals.is_empty() {
            return Err(ConfigError::key(
                "queue.retry_intervals",
                "needs at least one interval",
            ));
        }
        if retry_intervals.iter().any(Duration::is_zero) {
            return Err(ConfigError::key(
                "queue.retry_intervals",
                "intervals must be longer than zero",
            ));
        }
        if cfg.queue.max_concurrent_deliveries == 0 {
            return Err(ConfigError::key(
                "queue.max_concurrent_deliveries",
                "must be at least 1",
            ));
        }
        if cfg.queue.max_per_destination == 0 {
            return Err(ConfigError::key(
                "queue.max_per_destination",
                "must be at least 1",
            ));
        }
        if let Some(h) = &cfg.relay.smarthost {
            dns::split_host_port(h).ok_or_else(|| {
                ConfigError::key(
                    "relay.smarthost",
                    format!("{h:?}: expected host:port (or [ipv6]:port)"),
                )
            })?;
        }
        for (domain, h) in &cfg.relay.routes {
            dns::split_host_port(h).ok_or_else(|| {
                ConfigError::key(
                    "relay.routes",
                    format!("{domain}: {h:?}: expected host:port (or [ipv6]:port)"),
                )
            })?;
        }
        let timeout = config::duration("queue.connect_timeout", &cfg.queue.connect_timeout)?;
        if timeout.is_zero() {
            return Err(ConfigError::key(
                "queue.connect_timeout",
                "must be longer than zero",
            ));
        }
        Ok(DeliverySettings {
            smarthost: cfg.relay.smarthost.clone(),
            routes: cfg
                .relay
                .routes
                .iter()
                .map(|(d, h)| (d.to_ascii_lowercase(), h.clone()))
                .collect(),
            retry_intervals,
            max_lifetime: config::duration("queue.max_lifetime", &cfg.queue.max_lifetime)?,
            delay_warning: config::delay_warning(&cfg.queue.delay_warning)?,
            max_concurrent_deliveries: cfg.queue.max_concurrent_deliveries,
            max_per_destination: cfg.queue.max_per_destination,
            connect_timeout: timeout,
            command_timeout: timeout,
            data_done_timeout: timeout.max(Duration::from_secs(600)),
            connection_cache_time: config::optional_duration(
                "queue.connection_cache_time",
                &cfg.queue.connection_cache_time,
            )?,
            connection_reuse_time: config::duration(
                "queue.connection_reuse_time",
                &cfg.queue.connection_reuse_time,
            )?,
            ehlo_name: cfg.server.hostname.clone(),
            require_tls: cfg.tls.require_outbound,
            mx_port: 25,
            shutdown_grace: config::duration("server.shutdown_grace", &cfg.server.shutdown_grace)?,
            tracer: crate::trace::Tracer::disabled(),
            dns: cfg.dns_settings()?,
        })
    }
}

impl Default for DeliverySettings {
    /// The settings of the default configuration (defaults live in `config.rs`).
    fn default() -> Self {
        DeliverySettings::from_config(&Config::default())
            .expect("the default configuration is valid")
    }
}

/// Why recipients failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// A 5xx reply, a null MX, a non-existent domain, ...: `last_error` says which.
    Permanent,
    /// Still undelivered at the end of `max_lifetime` (`last_error` starts `"expired: "`).
    Expired,
    /// Not a failure yet: still pending `delay_warning` after arrival (reported once per
    /// message, for a "delayed" DSN).
    Delayed,
    /// Not a failure: delivered to a receiver that does not speak DSN (for a "relayed"
    /// DSN where NOTIFY asked for SUCCESS).
    Relayed,
}

impl From<crate::spool::OwedReason> for FailureReason {
    fn from(r: crate::spool::OwedReason) -> Self {
        match r {
            crate::spool::OwedReason::Permanent => FailureReason::Permanent,
            crate::spool::OwedReason::Expired => FailureReason::Expired,
            crate::spool::OwedReason::Delayed => FailureReason::Delayed,
        }
    }
}

/// The reasons whose DSN is kept owed when it cannot be spooled (not `Relayed`).
impl TryFrom<FailureReason> for crate::spool::OwedReason {
    type Error = ();
    fn try_from(r: FailureReason) -> Result<Self, ()> {
        match r {
            FailureReason::Permanent => Ok(crate::spool::OwedReason::Permanent),
            FailureReason::Expired => Ok(crate::spool::OwedReason::Expired),
            FailureReason::Delayed => Ok(crate::spool::OwedReason::Delayed),
            FailureReason::Relayed => Err(()),
        }
    }
}

/// Recipients that failed in one attempt, handed to the `on_failure` callback (the DSN
/// generator).
#[derive(Debug, Clone)]
pub struct FailureReport {
    /// The envelope as written to the spool after the attempt.
    pub envelope: Envelope,
    /// Indices into `envelope.recipients` of the recipients that failed in this attempt.
    pub failed: Vec<usize>,
    pub reason: FailureReason,
}

/// The `on_failure` callback. It returns whether the report was taken care of (the DSN is
/// durably spooled, or none is due); `false` keeps the report owed in the envelope, to be
/// made again at the next attempt.
pub type OnFailure = std::sync::Arc<dyn Fn(FailureReport) -> bool + Send + Sync>;
