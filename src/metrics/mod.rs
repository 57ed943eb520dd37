//! The relay's Prometheus metrics (issue 13): counters fed by the same events the session,
//! delivery and bounce code hand the [`Tracer`](crate::trace::Tracer) (which passes each
//! one here before it goes to the trace store, so they count with `[trace]` off too), and
//! gauges set from a queue snapshot at scrape time. Every label value is one of a fixed
//! set of `&'static str` (a reason, a DSN kind, a TLS version): never an address or a
//! domain, so the number of series stays bounded and `/metrics` holds nothing private.

mod labels;

use std::sync::atomic::Ordering;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::trace::{Event, Kind};
pub use labels::{dsn_kind, refusal_reason, tls_version};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One label: `(name, value)`.
type Label = [(&'static str, &'static str); 1];

/// Upper bounds of the delivery latency histogram, in seconds (arrival to delivered; the
/// spool keeps arrival to the second).
const LATENCY_BUCKETS: [f64; 11] = [
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    86400.0,
    2.0 * 86400.0,
    5.0 * 86400.0,
];

/// Every metric of the relay, registered under the prefix `srs_relay`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Counter,
    delivered: Counter,
    deferred: Counter,
    failed: Family<Label, Counter>,
    refused: Family<Label, Counter>,
    srs_forwards: Counter,
    srs_reverses: Counter,
    refused_bounces: Family<Label, Counter>,
    dsn_sent: Family<Label, Counter>,
    queue_actions: Family<Label, Counter>,
    latency: Histogram,
    connections_in: Family<Label, Counter>,
    connections_out: Family<Label, Counter>,
    trace_dropped: Counter,
    queue_messages: Gauge,
    queue_oldest_age: Gauge,
    queue_over_hour: Gauge,
    in_flight: Gauge,
    queue_alert: Gauge,
}

/// What the gauges show, read when `/metrics` is fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Messages in the delivery queue (waiting or being attempted).
    pub queued: u64,
    /// Age of the oldest queued message, seconds (0 when the queue is empty).
    pub oldest_age_secs: u64,
    /// Queued messages that arrived more than an hour ago.
    pub over_hour: u64,
    /// Outbound deliveries holding a connection slot now.
    pub in_flight: u64,
    /// The queue alert is raised (see `alerts`).
    pub alert_active: bool,
    /// Trace events dropped so far (the tracer's own counter).
    pub trace_dropped: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let latency = Histogram::new(LATENCY_BUCKETS);
        let mut m = Metrics {
            registry: Registry::with_prefix("srs_relay"),
            received: Counter::default(),
            delivered: Counter::default(),
            deferred: Counter::default(),
            failed: Family::default(),
            refused: Family::default(),
            srs_forwards: Counter::default(),
            srs_reverses: Counter::default(),
            refused_bounces: Family::default(),
            dsn_sent: Family::default(),
            queue_actions: Family::default(),
            latency,
            connections_in: Family::default(),
            connections_out: Family::default(),
            trace_dropped: Counter::default(),
            queue_messages: Gauge::default(),
            queue_oldest_age: Gauge::default(),
            queue_over_hour: Gauge::default(),
            in_flight: Gauge::default(),
            queue_alert: Gauge::default(),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "received_recipients",
            "Recipients accepted and spooled (a message to three recipients counts three)",
            self.received.clone(),
        );
        r.register(
            "queue_actions_recipients",
            "Recipients acted on by the postmaster (srs-relay queue): action held, released, deleted, retry",
            self.queue_actions.clone(),
        );
        r.register(
            "delivered_recipients",
            "Recipients a next hop accepted",
            self.delivered.clone(),
        );
        r.register(
            "deferred_recipients",
            "Recipient delivery attempts that ended in a temporary failure (tried again later)",
            self.deferred.clone(),
        );
        r.register(
            "failed_recipients",
            "Recipients given up on: reason permanent (5xx, null MX, ...) or expired",
            self.failed.clone(),
        );
        r.register(
            "refused_recipients",
            "Recipients refused at RCPT or DATA, by reason",
            self.refused.clone(),
        );
        r.register(
            "srs_forwards",
            "Recipients spooled with the sender rewritten into an SRS address",
            self.srs_forwards.clone(),
        );
        r.register(
            "srs_reverses",
            "Bounces to one of our SRS addresses sent on to the original sender",
            self.srs_reverses.clone(),
        );
        r.register(
            "refused_bounces",
            "Mail to one of our SRS addresses refused: not_a_bounce (srs.bounce_senders = \"null\") or invalid (forged, expired or malformed)",
            self.refused_bounces.clone(),
        );
        r.register(
            "dsns_sent",
            "DSNs spooled to original senders, by kind (permanent, expired, delayed, relayed)",
            self.dsn_sent.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Time from arrival to delivery, per delivered recipient",
            self.latency.clone(),
        );
        r.register(
            "connections_in",
            "Inbound SMTP sessions by TLS version: each connection counts under none when it opens, and under its TLS version when STARTTLS succeeds",
            self.connections_in.clone(),
        );
        r.register(
            "connections_out",
            "Outbound SMTP connections opened, by the TLS version in use (none: plain)",
            self.connections_out.clone(),
        );
        r.register(
            "trace_events_dropped",
            "Message trace events dropped (the writer was behind or the store failed)",
            self.trace_dropped.clone(),
        );
        r.register(
            "queue_messages",
            "Messages in the delivery queue",
            self.queue_messages.clone(),
        );
        r.register(
            "queue_oldest_age_seconds",
            "Age of the oldest message in the delivery queue (0: empty)",
            self.queue_oldest_age.clone(),
        );
        r.register(
            "queue_over_1h_messages",
            "Messages in the delivery queue that arrived more than an hour ago",
            self.queue_over_hour.clone(),
        );
        r.register(
            "deliveries_in_flight",
            "Outbound deliveries holding a connection slot now",
            self.in_flight.clone(),
        );
        r.register(
            "queue_alert_active",
            "1 while the queue alert is raised (alerts.queue_threshold), else 0",
            self.queue_alert.clone(),
        );
    }

    /// Counts what `event` says happened.
    pub fn observe(&self, e: &Event) {
        match e.kind {
            Kind::Connection => {
                inc(&self.connections_in, "tls", tls_version(e.tls.as_deref()));
            }
            Kind::Received => {
                self.received.inc();
                let bounce = e.status.as_deref() == Some("bounced");
                if !bounce && e.sender != e.srs_sender {
                    self.srs_forwards.inc();
                }
            }
            Kind::BounceReversed => {
                self.srs_reverses.inc();
            }
            Kind::Refused => {
                let reason = refusal_reason(detail(e, "reason").as_deref());
                inc(&self.refused, "reason", reason);
                if let Some(bounce) = reason.strip_prefix("srs_") {
                    inc(&self.refused_bounces, "reason", bounce);
                }
            }
            Kind::Delivered => {
                self.delivered.inc();
                if let Some(secs) = detail(e, "delay_secs").and_then(|d| d.parse::<f64>().ok()) {
                    self.latency.observe(secs);
                }
            }
            Kind::Deferred => {
                self.deferred.inc();
            }
            Kind::Failed => inc(&self.failed, "reason", "permanent"),
            Kind::Expired => inc(&self.failed, "reason", "expired"),
            Kind::Held | Kind::Released | Kind::Deleted | Kind::Retry => {
                inc(&self.queue_actions, "action", e.kind.as_str())
            }
            Kind::DsnSent => {
                inc(
                    &self.dsn_sent,
                    "kind",
                    dsn_kind(detail(e, "reason").as_deref()),
                );
            }
        }
    }

    /// Counts an outbound connection, with the TLS description it runs under (or none).
    pub fn outbound_connection(&self, tls: Option<&str>) {
        inc(&self.connections_out, "tls", tls_version(tls));
    }

    /// The metrics in the Prometheus text format (0.0.4), gauges set from `g`.
    pub fn render(&self, g: &Gauges) -> String {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.queue_messages.set(clamp(g.queued));
        self.queue_oldest_age.set(clamp(g.oldest_age_secs));
        self.queue_over_hour.set(clamp(g.over_hour));
        self.in_flight.set(clamp(g.in_flight));
        self.queue_alert.set(i64::from(g.alert_active));
        // A copy of the tracer's count, which only grows: set, not added to, so two
        // scrapes at once cannot count it twice.
        self.trace_dropped
            .inner()
            .fetch_max(g.trace_dropped, Ordering::Relaxed);
        let mut out = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

fn inc(family: &Family<Label, Counter>, name: &'static str, value: &'static str) {
    family.get_or_create(&[(name, value)]).inc();
}

/// A string field of the event's JSON `detail`.
fn detail(e: &Event, key: &str) -> Option<String> {
    let text = e.detail.as_deref()?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    map.get(key)?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests;
