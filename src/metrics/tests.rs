//! The metrics as Prometheus would read them: counts from events, bounded labels.

use super::*;

fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn events_become_counts_with_fixed_labels() {
    let m = Metrics::new();
    let mut fwd = Event::new(Kind::Received)
        .sender("bob@example.org")
        .srs_sender("john+SRS=x=example.org=bob@forward.example");
    fwd.status = None;
    m.observe(&fwd);
    m.observe(
        &Event::new(Kind::Received)
            .sender("a@local")
            .srs_sender("a@local"),
    );
    m.observe(&Event::new(Kind::BounceReversed));
    m.observe(&Event::new(Kind::Refused).detail(&[("stage", "rcpt"), ("reason", "relay denied")]));
    m.observe(&Event::new(Kind::Refused).detail(&[
        ("stage", "rcpt"),
        ("reason", "srs: forged, expired or malformed"),
    ]));
    m.observe(&Event::new(Kind::Refused).detail(&[("reason", "anything new@example.org")]));
    m.observe(&Event::new(Kind::Delivered).detail(&[("delay_secs", "7")]));
    m.observe(&Event::new(Kind::Deferred));
    m.observe(&Event::new(Kind::Failed));
    m.observe(&Event::new(Kind::Expired));
    m.observe(&Event::new(Kind::DsnSent).detail(&[("dsn_id", "x"), ("reason", "delayed")]));
    let mut tls = Event::new(Kind::Connection);
    tls.tls = Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into());
    m.observe(&tls);
    m.observe(&Event::new(Kind::Connection));
    m.outbound_connection(Some("TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
    m.outbound_connection(None);
    let text = m.render(&Gauges {
        queued: 4,
        oldest_age_secs: 90,
        over_hour: 1,
        in_flight: 2,
        alert_active: true,
        trace_dropped: 3,
    });
    let want = [
        ("srs_relay_received_recipients_total", 2.0),
        ("srs_relay_srs_forwards_total", 1.0),
        ("srs_relay_srs_reverses_total", 1.0),
        (
            "srs_relay_refused_recipients_total{reason=\"relay_denied\"}",
            1.0,
        ),
        (
            "srs_relay_refused_recipients_total{reason=\"srs_invalid\"}",
            1.0,
        ),
        ("srs_relay_refused_recipients_total{reason=\"other\"}", 1.0),
        ("srs_relay_refused_bounces_total{reason=\"invalid\"}", 1.0),
        ("srs_relay_delivered_recipients_total", 1.0),
        ("srs_relay_deferred_recipients_total", 1.0),
        (
            "srs_relay_failed_recipients_total{reason=\"permanent\"}",
            1.0,
        ),
        ("srs_relay_failed_recipients_total{reason=\"expired\"}", 1.0),
        ("srs_relay_dsns_sent_total{kind=\"delayed\"}", 1.0),
        ("srs_relay_connections_in_total{tls=\"TLSv1.3\"}", 1.0),
        ("srs_relay_connections_in_total{tls=\"none\"}", 1.0),
        ("srs_relay_connections_out_total{tls=\"TLSv1.2\"}", 1.0),
        ("srs_relay_connections_out_total{tls=\"none\"}", 1.0),
        ("srs_relay_delivery_latency_seconds_count", 1.0),
        ("srs_relay_delivery_latency_seconds_bucket{le=\"15\"}", 1.0),
        ("srs_relay_delivery_latency_seconds_bucket{le=\"5\"}", 0.0),
        ("srs_relay_trace_events_dropped_total", 3.0),
        ("srs_relay_queue_messages", 4.0),
        ("srs_relay_queue_oldest_age_seconds", 90.0),
        ("srs_relay_queue_over_1h_messages", 1.0),
        ("srs_relay_deliveries_in_flight", 2.0),
        ("srs_relay_queue_alert_active", 1.0),
    ];
    for (name, value) in want {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }
    assert!(
        !text.contains("example.org"),
        "no address in a label:\n{text}"
    );
    // The dropped count is the tracer's: a lower reading does not lower it.
    let text = m.render(&Gauges::default());
    assert_eq!(
        sample(&text, "srs_relay_trace_events_dropped_total"),
        Some(3.0)
    );
    assert_eq!(sample(&text, "srs_relay_queue_alert_active"), Some(0.0));
}
