//! `GET /api/reports?days=N`: the dashboard's reports, day by day (UTC) from the trace.
//!
//! * forwarding: messages per alias (the recipient as given), and how many bounces came
//!   back to that alias's SRS addresses;
//! * SRS: bounces reversed, and mail to our SRS addresses refused, by what was wrong
//!   (forged hash, expired, malformed, unknown stored token, not a bounce);
//! * TLS: inbound connections and outbound deliveries per TLS version, and plaintext;
//! * loops: messages refused as mail loops, per host of their Received chains.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::api::with_store;
use crate::trace::{self, Tally, TallyKey, TraceStore};

const DAY: i64 = 86_400_000;
/// Loop refusals read at most, for the loop report.
const MAX_LOOPS: u32 = 10_000;

#[derive(Deserialize)]
pub struct ReportQuery {
    days: Option<i64>,
}

/// Per-name counts, one per day of the report.
type Series = BTreeMap<String, Vec<i64>>;

fn add(series: &mut Series, name: &str, day: usize, days: usize, n: i64) {
    series
        .entry(name.to_owned())
        .or_insert_with(|| vec![0; days])[day] += n;
}

pub async fn reports(State(s): State<Arc<AdminState>>, Query(q): Query<ReportQuery>) -> Response {
    let days = q.days.unwrap_or(10).clamp(1, 90);
    let now = trace::now_ms();
    let since = (now / DAY - days + 1) * DAY;
    let until = now + 1;
    let read = move |st: &dyn TraceStore| {
        Ok((
            st.tally(
                since,
                until,
                DAY,
                TallyKey::OriginalRecipient,
                &["received"],
            )?,
            st.tally(
                since,
                until,
                DAY,
                TallyKey::Detail,
                &["refused", "bounce_reversed"],
            )?,
            st.tally(
                since,
                until,
                DAY,
                TallyKey::Tls,
                &["connection", "delivered", "deferred", "failed"],
            )?,
            st.loop_refusals(since, until, MAX_LOOPS)?,
        ))
    };
    let (received, srs, tls, loops) = match with_store(&s, read).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let n = days as usize;
    let day_of = |t: i64| usize::try_from((t - since) / DAY).unwrap_or(0).min(n - 1);
    Json(json!({
        "days": (0..days).map(|d| since + d * DAY).collect::<Vec<_>>(),
        "forwarding": forwarding(&received, n, day_of),
        "srs": srs_report(&srs, n, day_of),
        "tls": tls_report(&tls, n, day_of),
        "loops": loop_report(&loops, n, day_of),
    }))
    .into_response()
}

/// The alias a bounce came back to, from the SRS address it was sent to:
/// `john+SRS=…@forward.example` is john@forward.example's; other SRS forms are named by
/// their kind.
fn bounce_alias(recipient: &str) -> Option<String> {
    let (local, domain) = recipient.rsplit_once('@')?;
    let lower = local.to_ascii_lowercase();
    if lower.starts_with("bounces+srs=") {
        return Some("(relayed mail)".into());
    }
    if lower.starts_with("srs0=") || lower.starts_with("srs1=") {
        return Some("(classic SRS)".into());
    }
    let at = lower.find("+srs=")?;
    Some(format!("{}@{domain}", &local[..at]))
}

fn forwarding(received: &[Tally], n: usize, day_of: impl Fn(i64) -> usize) -> Value {
    let (mut messages, mut bounces) = (Series::new(), Series::new());
    for t in received {
        let Some(rcpt) = &t.key else { continue };
        match bounce_alias(rcpt) {
            Some(alias) => add(&mut bounces, &alias, day_of(t.bucket), n, t.count),
            None => add(&mut messages, rcpt, day_of(t.bucket), n, t.count),
        }
    }
    let names: std::collections::BTreeSet<&String> =
        messages.keys().chain(bounces.keys()).collect();
    let zero = vec![0; n];
    let mut rows: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let m = messages.get(name).unwrap_or(&zero);
            let b = bounces.get(name).unwrap_or(&zero);
            json!({"alias": name, "messages": m, "bounces": b,
                "total": m.iter().sum::<i64>(), "bounces_total": b.iter().sum::<i64>()})
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r["total"].as_i64().unwrap_or(0)));
    Value::Array(rows)
}

fn srs_report(tallies: &[Tally], n: usize, day_of: impl Fn(i64) -> usize) -> Value {
    let mut reversed = vec![0; n];
    let mut refused = Series::new();
    for t in tallies {
        let day = day_of(t.bucket);
        if t.kind == "bounce_reversed" {
            reversed[day] += t.count;
            continue;
        }
        let detail: Value = t
            .key
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let why = match (detail["srs"].as_str(), detail["reason"].as_str()) {
            (Some(srs), _) => srs.to_owned(),
            (None, Some("srs: not a bounce")) => "not_a_bounce".into(),
            // Refused before the finer reason was recorded.
            (None, Some("srs: forged, expired or malformed")) => "invalid".into(),
            _ => continue,
        };
        add(&mut refused, &why, day, n, t.count);
    }
    json!({ "reversed": reversed, "refused": refused })
}

fn tls_report(tallies: &[Tally], n: usize, day_of: impl Fn(i64) -> usize) -> Value {
    let (mut inbound, mut outbound) = (Series::new(), Series::new());
    for t in tallies {
        let version = t
            .key
            .as_deref()
            .and_then(|k| k.split_whitespace().next())
            .unwrap_or("plaintext");
        let series = if t.kind == "connection" {
            &mut inbound
        } else {
            &mut outbound
        };
        add(series, version, day_of(t.bucket), n, t.count);
    }
    json!({ "inbound_connections": inbound, "outbound_deliveries": outbound })
}

fn loop_report(
    refusals: &[(i64, Option<String>)],
    n: usize,
    day_of: impl Fn(i64) -> usize,
) -> Value {
    let mut per_day: Vec<Vec<(i64, Option<String>)>> = vec![Vec::new(); n];
    for r in refusals {
        per_day[day_of(r.0)].push(r.clone());
    }
    let mut hosts = Series::new();
    let mut loops = vec![0; n];
    for (day, list) in per_day.iter().enumerate() {
        let (by_host, count) = trace::loops::by_host(list);
        loops[day] = count as i64;
        for h in by_host {
            add(&mut hosts, &h.host, day, n, h.messages as i64);
        }
    }
    json!({ "messages": loops, "hosts": hosts, "limited": refusals.len() as u32 >= MAX_LOOPS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounces_are_counted_for_the_alias_they_came_back_to() {
        assert_eq!(
            bounce_alias("John+SRS=ABCD1234=JX=example.org=bob@forward.example").as_deref(),
            Some("John@forward.example")
        );
        assert_eq!(
            bounce_alias("bounces+SRS=x@forward.example").as_deref(),
            Some("(relayed mail)")
        );
        assert_eq!(
            bounce_alias("SRS0=ab=JX=x.org=bob@forward.example").as_deref(),
            Some("(classic SRS)")
        );
        assert_eq!(bounce_alias("john@forward.example"), None);
    }

    #[test]
    fn reports_count_per_day() {
        let t = |bucket: i64, kind: &str, key: Option<&str>, count| Tally {
            bucket,
            kind: kind.into(),
            key: key.map(str::to_owned),
            count,
        };
        let day_of = |b: i64| (b / DAY) as usize;
        let fwd = forwarding(
            &[
                t(0, "received", Some("john@f.example"), 3),
                t(DAY, "received", Some("john@f.example"), 2),
                t(DAY, "received", Some("john+srs=h=t=x.org=bob@f.example"), 1),
            ],
            2,
            day_of,
        );
        assert_eq!(fwd[0]["alias"], "john@f.example");
        assert_eq!(fwd[0]["messages"], json!([3, 2]));
        assert_eq!(fwd[0]["bounces"], json!([0, 1]));
        let srs = srs_report(
            &[
                t(0, "bounce_reversed", None, 4),
                t(
                    DAY,
                    "refused",
                    Some(r#"{"reason":"srs: forged, expired or malformed","srs":"expired"}"#),
                    2,
                ),
                t(DAY, "refused", Some(r#"{"reason":"srs: not a bounce"}"#), 1),
                t(DAY, "refused", Some(r#"{"reason":"relay denied"}"#), 9),
            ],
            2,
            day_of,
        );
        assert_eq!(srs["reversed"], json!([4, 0]));
        assert_eq!(srs["refused"]["expired"], json!([0, 2]));
        assert_eq!(srs["refused"]["not_a_bounce"], json!([0, 1]));
        assert!(srs["refused"].get("relay denied").is_none());
        let tls = tls_report(
            &[
                t(0, "connection", Some("TLSv1.3 TLS13_AES_256_GCM_SHA384"), 5),
                t(0, "connection", None, 2),
                t(DAY, "delivered", Some("TLSv1.2 ECDHE"), 1),
            ],
            2,
            day_of,
        );
        assert_eq!(tls["inbound_connections"]["TLSv1.3"], json!([5, 0]));
        assert_eq!(tls["inbound_connections"]["plaintext"], json!([2, 0]));
        assert_eq!(tls["outbound_deliveries"]["TLSv1.2"], json!([0, 1]));
    }
}
