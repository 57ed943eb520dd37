//! A summary of the queue at one moment, for the metrics' gauges and the queue alert:
//! how many messages, the oldest, those over an hour old, and the recipient domains
//! with the most messages waiting and their last error.

use std::collections::HashMap;

use crate::spool::{Envelope, RecipientState};

/// The queue at one moment (from [`QueueHandle::snapshot`](super::QueueHandle::snapshot)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Messages in the queue (waiting or being attempted).
    pub queued: usize,
    /// Outbound deliveries holding a connection slot.
    pub in_flight: usize,
    /// The message that arrived first: queue id and arrival (unix seconds).
    pub oldest: Option<(String, u64)>,
    /// Messages that arrived more than an hour before the snapshot.
    pub over_hour: usize,
    /// Messages on hold (counted in `queued` too).
    pub held: usize,
    /// Recipient domains with pending recipients, the most messages first, at most the
    /// number asked for.
    pub destinations: Vec<DestinationCount>,
    /// How many domains there are in all (some may not be in `destinations`).
    pub destinations_total: usize,
}

/// One recipient domain in a [`QueueSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationCount {
    pub domain: String,
    /// Messages with a pending recipient in this domain.
    pub messages: usize,
    /// The last error of the most recently tried of those recipients, if any was tried.
    pub last_error: Option<String>,
}

/// Summarizes `envelopes` at `now` (unix seconds), with the `top` busiest domains.
pub(super) fn summarize<'a>(
    envelopes: impl Iterator<Item = &'a Envelope>,
    now: u64,
    top: usize,
) -> QueueSnapshot {
    let mut snap = QueueSnapshot::default();
    // domain -> (messages, (attempts of the message the error is from, error))
    let mut domains: HashMap<String, (usize, Option<(u32, String)>)> = HashMap::new();
    for env in envelopes {
        snap.queued += 1;
        if env.held_since.is_some() {
            snap.held += 1;
        }
        if now.saturating_sub(env.arrival) > 3600 {
            snap.over_hour += 1;
        }
        let older = snap
            .oldest
            .as_ref()
            .is_none_or(|(id, at)| (env.arrival, &env.id) < (*at, id));
        if older {
            snap.oldest = Some((env.id.clone(), env.arrival));
        }
        if top == 0 {
            continue;
        }
        let mut seen: Vec<String> = Vec::new();
        for r in &env.recipients {
            if r.state != RecipientState::Pending {
                continue;
            }
            let domain = r
                .address
                .rsplit_once('@')
                .map_or_else(|| "(no domain)".to_owned(), |(_, d)| d.to_lowercase());
            let entry = domains.entry(domain.clone()).or_default();
            if !seen.contains(&domain) {
                entry.0 += 1;
                seen.push(domain);
            }
            if let Some(e) = &r.last_error
                && entry.1.as_ref().is_none_or(|(a, _)| env.attempts >= *a)
            {
                entry.1 = Some((env.attempts, e.clone()));
            }
        }
    }
    snap.destinations_total = domains.len();
    let mut list: Vec<DestinationCount> = domains
        .into_iter()
        .map(|(domain, (messages, err))| DestinationCount {
            domain,
            messages,
            last_error: err.map(|(_, e)| e),
        })
        .collect();
    list.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.domain.cmp(&b.domain)));
    list.truncate(top);
    snap.destinations = list;
    snap
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::envelope;

    #[test]
    fn counts_oldest_and_busiest_domains() {
        let mut a = envelope(&["x@one.example", "y@one.example", "z@two.example"]);
        a.id = "A".into();
        a.arrival = 10_000;
        a.attempts = 2;
        a.recipients[0].last_error = Some("451 4.3.0 try later".into());
        let mut b = envelope(&["w@One.Example"]);
        b.id = "B".into();
        b.arrival = 5_000;
        let mut c = envelope(&["v@two.example"]);
        c.id = "C".into();
        c.arrival = 12_000;
        c.recipients[0].state = RecipientState::Delivered;
        let s = summarize([&a, &b, &c].into_iter(), 14_000, 1);
        assert_eq!(s.queued, 3);
        assert_eq!(s.over_hour, 2, "A and B are older than an hour");
        assert_eq!(s.oldest, Some(("B".into(), 5_000)));
        assert_eq!(s.destinations_total, 2);
        assert_eq!(
            s.destinations,
            vec![DestinationCount {
                domain: "one.example".into(),
                messages: 2,
                last_error: Some("451 4.3.0 try later".into()),
            }]
        );
        let s = summarize([&a, &b, &c].into_iter(), 14_000, 0);
        assert!(s.destinations.is_empty() && s.destinations_total == 0);
    }
}
